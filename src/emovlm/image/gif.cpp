// GIF: the first frame, as Pillow's GifImagePlugin reads it, converted to RGB.
//
// What Pillow does for frame 0, and so what this does:
// - the image has the logical screen's size, grown to hold a frame that reaches past it;
// - the canvas starts as index 0, or as the frame's transparent index when it has one, and the
//   frame's pixels are put at its offset;
// - colours come from the frame's local palette, else the global one; an index past the palette's
//   end (or any index when there is no palette) is the grey level of the index itself (Pillow's
//   palettes start as a grey ramp); transparency is dropped by convert("RGB");
// - LZW data that ends (end code or block terminator) before the frame is full leaves the rest as
//   it was; data cut off inside the sub-blocks is a truncated file.
#include "emovlm/image/gif.h"

#include <array>
#include <cstring>

#include "emovlm/core/error.h"

namespace emovlm {

namespace {

struct Reader {
  const uint8_t* d;
  size_t n, pos = 0;
  const std::string& name;

  bool has(size_t k) const { return pos + k <= n; }
  uint8_t u8() {
    if (!has(1)) throw Error(cat(name, ": corrupt GIF: truncated file"));
    return d[pos++];
  }
  uint16_t u16() {
    uint16_t lo = u8();
    return static_cast<uint16_t>(lo | (u8() << 8));
  }
  const uint8_t* bytes(size_t k) {
    if (!has(k)) throw Error(cat(name, ": corrupt GIF: truncated file"));
    const uint8_t* p = d + pos;
    pos += k;
    return p;
  }
  void skip_sub_blocks() {
    for (uint8_t len = u8(); len != 0; len = u8()) bytes(len);
  }
};

// The frame's image data: the concatenated sub-blocks, up to the block terminator.
std::vector<uint8_t> read_sub_blocks(Reader& r) {
  std::vector<uint8_t> out;
  for (uint8_t len = r.u8(); len != 0; len = r.u8()) {
    const uint8_t* p = r.bytes(len);
    out.insert(out.end(), p, p + len);
  }
  return out;
}

// Variable-width LZW as GIF uses it (codes LSB first, at most 12 bits, a clear and an end code).
// Writes at most `count` indices into `out`; returns how many it wrote.
size_t lzw_decode(const std::vector<uint8_t>& data, int min_code_size, uint8_t* out, size_t count,
                  const std::string& name) {
  if (min_code_size < 1 || min_code_size > 11)
    throw Error(cat(name, ": corrupt GIF: LZW minimum code size ", min_code_size, " (1 to 11)"));
  const int clear = 1 << min_code_size, end = clear + 1;
  std::array<uint16_t, 4096> prefix{};
  std::array<uint8_t, 4096> suffix{}, first{};
  std::array<uint16_t, 4096> length{};
  for (int i = 0; i < clear; ++i) {
    suffix[i] = first[i] = static_cast<uint8_t>(i);
    length[i] = 1;
  }
  int width = min_code_size + 1, next = end + 1, prev = -1;
  size_t written = 0, bitpos = 0;
  const size_t nbits = data.size() * 8;
  std::vector<uint8_t> scratch(4096);
  while (written < count && bitpos + width <= nbits) {
    int code = 0;
    for (int b = 0; b < width; ++b, ++bitpos)
      code |= ((data[bitpos >> 3] >> (bitpos & 7)) & 1) << b;
    if (code == clear) {
      width = min_code_size + 1;
      next = end + 1;
      prev = -1;
      continue;
    }
    if (code == end) break;
    // a code after the first adds an entry: prev's string + the first index of code's string
    // (of prev's own when code is the entry being added: the KwKwK case)
    int entry = code;
    if (prev < 0) {
      if (code >= clear)
        throw Error(cat(name, ": corrupt GIF: LZW code ", code, " before any string"));
    } else if (code < next || (code == next && next < 4096)) {
      if (next < 4096) {
        prefix[next] = static_cast<uint16_t>(prev);
        suffix[next] = code < next ? first[code] : first[prev];
        first[next] = first[prev];
        length[next] = static_cast<uint16_t>(length[prev] + 1);
        ++next;
        if (next == (1 << width) && width < 12) ++width;
      }
    } else {
      throw Error(
          cat(name, ": corrupt GIF: LZW code ", code, " past the table (", next, " entries)"));
    }
    // the entry's string, last index first
    const int len = length[entry];
    for (int i = len - 1, c = entry; i >= 0; --i, c = prefix[c]) scratch[i] = suffix[c];
    const size_t take = std::min<size_t>(len, count - written);
    std::memcpy(out + written, scratch.data(), take);
    written += take;
    prev = code;
  }
  return written;
}

}  // namespace

RgbImage decode_gif(const uint8_t* data, size_t size, const std::string& name,
                    const DecodeOptions& options) {
  Reader r{data, size, 0, name};
  r.bytes(6);  // GIF87a / GIF89a
  int screen_w = r.u16(), screen_h = r.u16();
  const uint8_t flags = r.u8();
  r.u8();  // background index: not used for frame 0 (see above)
  r.u8();  // aspect ratio
  std::vector<uint8_t> global_palette;
  if (flags & 0x80) {
    const size_t k = 3u << ((flags & 7) + 1);
    const uint8_t* p = r.bytes(k);
    global_palette.assign(p, p + k);
  }
  int transparency = -1;
  while (true) {
    const uint8_t tag = r.u8();
    if (tag == ';') throw Error(cat(name, ": corrupt GIF: no image in the file"));
    if (tag == '!') {  // extension
      const uint8_t label = r.u8();
      if (label == 0xF9) {  // graphic control: the transparent index
        const uint8_t len = r.u8();
        const uint8_t* b = r.bytes(len);
        if (len >= 4 && (b[0] & 1)) transparency = b[3];
      }
      r.skip_sub_blocks();
      continue;
    }
    if (tag != ',')
      throw Error(cat(name, ": corrupt GIF: unexpected block 0x", std::hex, int(tag)));
    // image descriptor
    const int x0 = r.u16(), y0 = r.u16(), fw = r.u16(), fh = r.u16();
    const uint8_t iflags = r.u8();
    std::vector<uint8_t> palette = global_palette;
    if (iflags & 0x80) {
      const size_t k = 3u << ((iflags & 7) + 1);
      const uint8_t* p = r.bytes(k);
      palette.assign(p, p + k);
    }
    const bool interlaced = iflags & 0x40;
    const int min_code_size = r.u8();
    std::vector<uint8_t> lzw = read_sub_blocks(r);

    const int w = std::max(screen_w, x0 + fw), h = std::max(screen_h, y0 + fh);
    check_image_size(name, w, h, options);
    std::vector<uint8_t> canvas(static_cast<size_t>(w) * h,
                                static_cast<uint8_t>(transparency < 0 ? 0 : transparency));
    std::vector<uint8_t> frame(static_cast<size_t>(fw) * fh, 0);
    const size_t got = lzw_decode(lzw, min_code_size, frame.data(), frame.size(), name);
    // rows in file order; interlaced files store rows 0,8,16,.. then 4,12,.. then 2,6,.. then
    // 1,3,..
    std::vector<int> order;
    if (interlaced) {
      for (auto [start, step] : {std::pair{0, 8}, {4, 8}, {2, 4}, {1, 2}})
        for (int y = start; y < fh; y += step) order.push_back(y);
    } else {
      for (int y = 0; y < fh; ++y) order.push_back(y);
    }
    const size_t full_rows = fw ? got / fw : 0;
    for (size_t i = 0; i < order.size() && i * fw < got; ++i) {
      const size_t n = i < full_rows ? fw : got - i * fw;  // the last, partly decoded row
      std::memcpy(&canvas[static_cast<size_t>(y0 + order[i]) * w + x0], &frame[i * fw], n);
    }

    RgbImage img(w, h);
    const size_t colors = palette.size() / 3;
    uint8_t* px = img.pixels.data();
    for (size_t i = 0; i < canvas.size(); ++i) {
      const uint8_t v = canvas[i];
      if (v < colors) {
        std::memcpy(px + 3 * i, &palette[3 * v], 3);
      } else {
        px[3 * i] = px[3 * i + 1] = px[3 * i + 2] = v;
      }
    }
    return img;
  }
}

}  // namespace emovlm
