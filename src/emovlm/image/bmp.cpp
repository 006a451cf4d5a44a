// BMP: uncompressed and bit-field BMPs, as Pillow's BmpImagePlugin reads them, converted to RGB.
//
// Headers: OS/2 core (12 bytes: 16-bit sizes, BGR palette entries) and the Windows INFO family
// (40, 52, 56, 64, 108, 124 bytes: BGRX palette entries, bit masks after a 40-byte header when
// the compression says BI_BITFIELDS). Depths 1, 4, 8 (palette; an index past the palette's end
// is the grey level of the index, as Pillow's palettes start as a grey ramp), 16 (5-5-5, or the
// bit fields 5-6-5 / 5-5-5), 24 (BGR), 32 (BGRX, or bit fields of 8 bits per channel); alpha is
// dropped. Rows are bottom-up unless the height is negative, each padded to 4 bytes. Channels of
// 5 or 6 bits scale to 8 bits as Pillow's unpackers do (v * 255 / 31, v * 255 / 63).
// RLE and embedded JPEG/PNG compressions are refused with an error that says so.
#include "emovlm/image/bmp.h"

#include <cstring>

#include "emovlm/core/error.h"

namespace emovlm {

namespace {

uint32_t le32(const uint8_t* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24);
}
uint16_t le16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

// One channel of a bit-field pixel: its mask's bits, scaled to 8 bits.
struct Field {
  uint32_t mask = 0;
  int shift = 0, bits = 0;

  explicit Field(uint32_t m = 0) : mask(m) {
    if (!m) return;
    while (!((m >> shift) & 1)) ++shift;
    while (bits + shift < 32 && ((m >> (shift + bits)) & 1)) ++bits;
  }
  uint8_t operator()(uint32_t v) const {
    const uint32_t x = (v & mask) >> shift;
    return static_cast<uint8_t>(bits == 8 ? x : x * 255 / ((1u << bits) - 1));
  }
};

}  // namespace

RgbImage decode_bmp(const uint8_t* data, size_t size, const std::string& name,
                    const DecodeOptions& options) {
  auto corrupt = [&](const std::string& why) { return Error(cat(name, ": corrupt BMP: ", why)); };
  if (size < 14 + 12) throw corrupt("truncated header");
  const uint32_t pixel_offset = le32(data + 10);
  const uint8_t* dib = data + 14;
  const uint32_t header = le32(dib);
  if (header != 12 && header != 40 && header != 52 && header != 56 && header != 64 &&
      header != 108 && header != 124)
    throw corrupt(cat("unknown header size ", header));
  if (14 + static_cast<size_t>(header) > size) throw corrupt("truncated header");

  int64_t width, height;
  int bits;
  uint32_t compression = 0, colors_used = 0;
  if (header == 12) {
    width = le16(dib + 4);
    height = le16(dib + 6);
    bits = le16(dib + 10);
  } else {
    width = static_cast<int32_t>(le32(dib + 4));
    height = static_cast<int32_t>(le32(dib + 8));
    bits = le16(dib + 14);
    compression = le32(dib + 16);
    colors_used = le32(dib + 32);
  }
  const bool top_down = height < 0;
  if (top_down) height = -height;
  check_image_size(name, width, height, options);

  // BI_RGB 0, BI_BITFIELDS 3 (and 6, BI_ALPHABITFIELDS); RLE8 1, RLE4 2, JPEG 4, PNG 5
  if (compression == 1 || compression == 2)
    throw Error(cat(name, ": unsupported BMP compression RLE", compression == 1 ? 8 : 4,
                    " (uncompressed and bit-field BMPs are supported)"));
  if (compression != 0 && compression != 3 && compression != 6)
    throw Error(cat(name, ": unsupported BMP compression ", compression,
                    " (uncompressed and bit-field BMPs are supported)"));
  if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 && bits != 32)
    throw corrupt(cat("unsupported bit depth ", bits));

  // palette: right after the header
  std::vector<uint8_t> palette;  // RGB triples
  if (bits <= 8) {
    const size_t entry = header == 12 ? 3 : 4;
    size_t count = colors_used ? colors_used : (1u << bits);
    if (count > 256) throw corrupt(cat(count, " palette colours for ", bits, "-bit pixels"));
    const size_t at = 14 + header;
    if (at + count * entry > size) throw corrupt("truncated palette");
    for (size_t i = 0; i < count; ++i) {
      const uint8_t* p = data + at + i * entry;
      palette.insert(palette.end(), {p[2], p[1], p[0]});
    }
  }

  // channel masks for 16 and 32 bits
  Field red, green, blue;
  if (bits == 16 || bits == 32) {
    if (compression == 0) {
      red = Field(bits == 16 ? 0x7C00 : 0xFF0000);
      green = Field(bits == 16 ? 0x03E0 : 0xFF00);
      blue = Field(bits == 16 ? 0x001F : 0xFF);
    } else {
      if (header < 40 || 14 + 40 + 12 > size) throw corrupt("truncated bit masks");
      red = Field(le32(dib + 40));
      green = Field(le32(dib + 44));
      blue = Field(le32(dib + 48));
    }
    const int want = bits == 16 ? 5 : 8;
    if (red.bits != want || blue.bits != want ||
        (green.bits != want && !(bits == 16 && green.bits == 6)))
      throw Error(cat(name, ": unsupported BMP bit fields (", red.bits, ", ", green.bits, ", ",
                      blue.bits, " bits for red, green, blue)"));
  } else if (compression != 0) {
    throw corrupt(cat("bit fields with ", bits, "-bit pixels"));
  }

  const size_t stride = (static_cast<size_t>(width) * bits + 31) / 32 * 4;
  if (pixel_offset > size ||
      stride > (size - pixel_offset) / static_cast<size_t>(height))  // no overflow
    throw corrupt("truncated pixel data");

  RgbImage img(static_cast<int>(width), static_cast<int>(height));
  const size_t colors = palette.size() / 3;
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* src = data + pixel_offset + stride * (top_down ? y : height - 1 - y);
    uint8_t* dst = img.row(static_cast<int>(y));
    for (int64_t x = 0; x < width; ++x, dst += 3) {
      if (bits <= 8) {
        const int per_byte = 8 / bits;
        const int shift = 8 - bits * (1 + static_cast<int>(x % per_byte));
        const uint8_t v = static_cast<uint8_t>((src[x / per_byte] >> shift) & ((1 << bits) - 1));
        if (v < colors) {
          std::memcpy(dst, &palette[3 * v], 3);
        } else {
          dst[0] = dst[1] = dst[2] = v;
        }
      } else if (bits == 24) {
        dst[0] = src[3 * x + 2];
        dst[1] = src[3 * x + 1];
        dst[2] = src[3 * x];
      } else {
        const uint32_t v = bits == 16 ? le16(src + 2 * x) : le32(src + 4 * x);
        dst[0] = red(v);
        dst[1] = green(v);
        dst[2] = blue(v);
      }
    }
  }
  return img;
}

}  // namespace emovlm
