// Pillow-compatible resampling (the arithmetic of Pillow's Resample.c, written anew).
#include "emovlm/image/resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "emovlm/core/error.h"

namespace emovlm {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // fixed-point coefficients for 8-bit samples

double filter_bilinear(double x) {
  if (x < 0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

double filter_bicubic(double x) {
  const double a = -0.5;
  if (x < 0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}

double filter_lanczos(double x) {
  if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3);
  return 0.0;
}

struct Kernel {
  double (*fn)(double);
  double support;
};

Kernel kernel_of(Filter f) {
  switch (f) {
    case Filter::Bilinear:
      return {filter_bilinear, 1.0};
    case Filter::Bicubic:
      return {filter_bicubic, 2.0};
    case Filter::Lanczos:
      return {filter_lanczos, 3.0};
    default:
      throw Error("resample: no kernel for the NEAREST filter");
  }
}

// Per output pixel: the first input index, the number of taps, and fixed-point weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> xmin, xcount;
  std::vector<int32_t> k;  // [out, ksize]
};

Coeffs precompute(int in_size, int out_size, const Kernel& kernel) {
  const double in0 = 0.0, in1 = in_size;
  const double scale = (in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = kernel.support * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.xmin.resize(out_size);
  c.xcount.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = kernel.fn((x + xmin - center + 0.5) * ss);
      total += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      double v = total != 0.0 ? w[x] / total : w[x];
      // round half away from zero into the fixed-point format
      c.k[static_cast<size_t>(xx) * c.ksize + x] = static_cast<int32_t>(
          v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.xmin[xx] = xmin;
    c.xcount[xx] = xmax;
  }
  return c;
}

inline uint8_t clip8(int64_t v) {
  if (v >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

// rows [y0, y0 + out.height) of `in` resampled horizontally into `out`.
void horizontal(const RgbImage& in, int y0, RgbImage& out, const Coeffs& c) {
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* src = in.row(y + y0);
    uint8_t* dst = out.row(y);
    for (int xx = 0; xx < out.width; ++xx) {
      const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
      const uint8_t* s = src + 3 * c.xmin[xx];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int x = 0; x < c.xcount[xx]; ++x) {
        s0 += s[3 * x] * k[x];
        s1 += s[3 * x + 1] * k[x];
        s2 += s[3 * x + 2] * k[x];
      }
      dst[3 * xx] = clip8(s0);
      dst[3 * xx + 1] = clip8(s1);
      dst[3 * xx + 2] = clip8(s2);
    }
  }
}

void vertical(const RgbImage& in, RgbImage& out, const Coeffs& c, int y_shift) {
  const size_t stride = static_cast<size_t>(in.width) * 3;
  for (int yy = 0; yy < out.height; ++yy) {
    const int32_t* k = &c.k[static_cast<size_t>(yy) * c.ksize];
    const int ymin = c.xmin[yy] - y_shift, ycount = c.xcount[yy];
    uint8_t* dst = out.row(yy);
    for (size_t i = 0; i < stride; ++i) {
      int32_t s = 1 << (kPrecisionBits - 1);
      const uint8_t* src = in.pixels.data() + static_cast<size_t>(ymin) * stride + i;
      for (int y = 0; y < ycount; ++y) s += src[y * stride] * k[y];
      dst[i] = clip8(s);
    }
  }
}

}  // namespace

Filter filter_from_pil(int resample) {
  switch (resample) {
    case 0:
      return Filter::Nearest;
    case 1:
      return Filter::Lanczos;
    case 2:
      return Filter::Bilinear;
    case 3:
      return Filter::Bicubic;
    default:
      throw Error(cat("unsupported Pillow resample code ", resample, " (0, 1, 2 or 3)"));
  }
}

Filter filter_from_name(const std::string& name) {
  if (name == "bilinear") return Filter::Bilinear;
  if (name == "bicubic") return Filter::Bicubic;
  if (name == "lanczos") return Filter::Lanczos;
  if (name == "nearest") return Filter::Nearest;
  throw Error(cat("unknown resampling filter '", name, "' (bilinear, bicubic, lanczos, nearest)"));
}

const char* filter_name(Filter f) {
  switch (f) {
    case Filter::Nearest:
      return "nearest";
    case Filter::Bilinear:
      return "bilinear";
    case Filter::Bicubic:
      return "bicubic";
    case Filter::Lanczos:
      return "lanczos";
  }
  return "?";
}

RgbImage resize(const RgbImage& image, int out_w, int out_h, Filter filter) {
  if (image.empty()) throw Error("resize: empty image");
  if (out_w <= 0 || out_h <= 0) throw Error(cat("resize: invalid target size ", out_w, "x", out_h));
  if (out_w == image.width && out_h == image.height) return image;
  if (filter == Filter::Nearest) {
    // Pillow's NEAREST: source pixel at floor((x + 0.5) * in / out).
    RgbImage out(out_w, out_h);
    for (int y = 0; y < out_h; ++y) {
      int sy = std::min(image.height - 1, static_cast<int>((y + 0.5) * image.height / out_h));
      for (int x = 0; x < out_w; ++x) {
        int sx = std::min(image.width - 1, static_cast<int>((x + 0.5) * image.width / out_w));
        std::memcpy(out.row(y) + 3 * x, image.row(sy) + 3 * sx, 3);
      }
    }
    return out;
  }
  const Kernel kernel = kernel_of(filter);
  const bool need_h = out_w != image.width, need_v = out_h != image.height;
  Coeffs ch = precompute(image.width, out_w, kernel);
  Coeffs cv = precompute(image.height, out_h, kernel);
  if (need_h) {
    // Only the rows the vertical pass reads are resampled horizontally.
    const int y_first = cv.xmin[0];
    const int y_last = cv.xmin[out_h - 1] + cv.xcount[out_h - 1];
    RgbImage tmp(out_w, need_v ? y_last - y_first : image.height);
    horizontal(image, need_v ? y_first : 0, tmp, ch);
    if (!need_v) return tmp;
    RgbImage out(out_w, out_h);
    vertical(tmp, out, cv, y_first);
    return out;
  }
  RgbImage out(image.width, out_h);
  vertical(image, out, cv, 0);
  return out;
}

RgbImage crop(const RgbImage& image, int left, int top, int w, int h) {
  if (left < 0 || top < 0 || w <= 0 || h <= 0 || left + w > image.width || top + h > image.height)
    throw Error(cat("crop: box (", left, ", ", top, ", ", left + w, ", ", top + h, ") outside the ",
                    image.width, "x", image.height, " image"));
  RgbImage out(w, h);
  for (int y = 0; y < h; ++y)
    std::memcpy(out.row(y), image.row(top + y) + 3 * left, static_cast<size_t>(w) * 3);
  return out;
}

RgbImage cap_long_side(const RgbImage& image, int max_side, Filter filter) {
  const int long_side = std::max(image.width, image.height);
  if (long_side <= max_side) return image;
  const double s = static_cast<double>(max_side) / long_side;
  int w = image.width >= image.height ? max_side
                                      : std::max(1, static_cast<int>(std::lround(image.width * s)));
  int h = image.height > image.width ? max_side
                                     : std::max(1, static_cast<int>(std::lround(image.height * s)));
  return resize(image, w, h, filter);
}

CappedImage decode_capped(const std::string& path, int max_side) {
  CappedImage c;
  try {
    c.image = cap_long_side(decode_image_file(path), max_side);
  } catch (const Error& e) {
    c.error = e.what();
  }
  return c;
}

}  // namespace emovlm
