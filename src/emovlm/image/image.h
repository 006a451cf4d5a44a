// An 8-bit RGB image (row-major HxWx3) and decoding of JPEG, PNG, GIF and BMP files into it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace emovlm {

struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // [H, W, 3]

  RgbImage() = default;
  RgbImage(int w, int h) : width(w), height(h), pixels(static_cast<size_t>(w) * h * 3) {}
  uint8_t* row(int y) { return pixels.data() + static_cast<size_t>(y) * width * 3; }
  const uint8_t* row(int y) const { return pixels.data() + static_cast<size_t>(y) * width * 3; }
  bool empty() const { return width == 0 || height == 0; }
};

struct DecodeOptions {
  // Pillow's decompression-bomb limit; 0 disables the check.
  int64_t max_pixels = 89478485;
  // Admission by declared size: called with the image's width and height as soon as its header
  // is read, before the decoder allocates anything of that size; it may throw to refuse the image
  // (what it throws reaches the caller as it is). A server reserves the pixels from its budgets
  // here.
  std::function<void(int64_t width, int64_t height)> admit;
};

// Decodes a JPEG, PNG, GIF (first frame), BMP or WebP (first frame; builds with libwebp) file
// and converts it to RGB as Pillow's Image.open(path).convert("RGB") does: grayscale is
// replicated, alpha and GIF transparency are dropped (not composited), palettes are expanded,
// 16-bit samples keep their high byte (16-bit grayscale clips at 255, as Pillow's I;16 -> RGB).
// The format is read from the content, not the name. Other formats (TIFF, HEIF, RLE-compressed
// BMP; WebP without libwebp) and corrupt or truncated files throw Error naming the file.
RgbImage decode_image_file(const std::string& path, const DecodeOptions& options = {});
RgbImage decode_image_memory(const uint8_t* data, size_t size, const std::string& name,
                             const DecodeOptions& options = {});

// Whether this build decodes WebP (it was built with libwebp).
bool webp_supported();

// The format of an image file from its first bytes: "JPEG", "PNG", "GIF", "BMP", "WebP", "TIFF",
// "HEIF/AVIF", or "" when none of these.
std::string sniff_image_format(const uint8_t* data, size_t size);

// Throws Error naming the file when w x h is not a valid size or exceeds options.max_pixels; then
// calls options.admit. Every decoder calls it before allocating the image.
void check_image_size(const std::string& name, int64_t w, int64_t h, const DecodeOptions& options);

// Encodes as JPEG (baseline, libjpeg defaults: 4:2:0 chroma subsampling) or 8-bit RGB PNG.
std::string encode_jpeg(const RgbImage& image, int quality = 90);
std::string encode_png(const RgbImage& image);
// Writes atomically; the format follows the extension (.jpg/.jpeg/.png).
void write_image_file(const std::string& path, const RgbImage& image, int jpeg_quality = 90);

}  // namespace emovlm
