// BMP decoding (uncompressed and bit fields, as Pillow reads them) to RGB; used by
// decode_image_memory.
#pragma once

#include "emovlm/image/image.h"

namespace emovlm {

RgbImage decode_bmp(const uint8_t* data, size_t size, const std::string& name,
                    const DecodeOptions& options);

}  // namespace emovlm
