// Pillow-compatible resampling of 8-bit RGB images (Image.resize with BILINEAR, BICUBIC, LANCZOS):
// separable filters whose support grows when shrinking (antialiasing), fixed-point uint8
// arithmetic, horizontal pass first, exactly as Pillow's Resample.c.
#pragma once

#include <string>

#include "emovlm/image/image.h"

namespace emovlm {

enum class Filter { Nearest, Bilinear, Bicubic, Lanczos };

// Pillow's numbering: 0 NEAREST, 1 LANCZOS, 2 BILINEAR, 3 BICUBIC (as in preprocessor_config.json).
Filter filter_from_pil(int resample);
Filter filter_from_name(const std::string& name);  // "bilinear", "bicubic", "lanczos", "nearest"
const char* filter_name(Filter f);

// Image.resize((out_w, out_h), filter). Same size returns a copy.
RgbImage resize(const RgbImage& image, int out_w, int out_h, Filter filter);

// Image.crop((left, top, left + w, top + h)); the box must lie inside the image.
RgbImage crop(const RgbImage& image, int left, int top, int w, int h);

// Shrinks so that the longer side is at most max_side (aspect kept, rounded); smaller images
// are returned unchanged. The reference caps VLM inputs at 1024 px with LANCZOS.
RgbImage cap_long_side(const RgbImage& image, int max_side, Filter filter = Filter::Lanczos);

// An image file decoded and capped as a VLM input, or why it could not be read: for the commands
// that go on past an unreadable image (the error names the file).
struct CappedImage {
  RgbImage image;
  std::string error;  // empty when decoded
};
CappedImage decode_capped(const std::string& path, int max_side);

}  // namespace emovlm
