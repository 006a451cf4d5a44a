// GIF decoding (the first frame, as Pillow reads it) to RGB; used by decode_image_memory.
#pragma once

#include "emovlm/image/image.h"

namespace emovlm {

RgbImage decode_gif(const uint8_t* data, size_t size, const std::string& name,
                    const DecodeOptions& options);

}  // namespace emovlm
