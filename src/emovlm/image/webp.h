// WebP decoding (libwebp, frame 0 as Pillow reads it) to RGB; used by decode_image_memory when the
// build has libwebp (EMOVLM_HAVE_WEBP).
#pragma once

#include "emovlm/image/image.h"

namespace emovlm {

RgbImage decode_webp(const uint8_t* data, size_t size, const std::string& name,
                     const DecodeOptions& options);

}  // namespace emovlm
