// Pillow-compatible resampling: properties, and agreement with a direct float computation.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/image/preprocess.h"
#include "emovlm/image/resample.h"

using namespace emovlm;

namespace {

RgbImage random_image(int w, int h, uint32_t seed) {
  std::mt19937 rng(seed);
  RgbImage img(w, h);
  for (auto& p : img.pixels) p = static_cast<uint8_t>(rng() % 256);
  return img;
}

// A direct double-precision separable resampling with the same kernels and supports: the
// fixed-point result may differ from it by rounding only (a level or two after two passes).
double kernel(Filter f, double x) {
  x = std::fabs(x);
  switch (f) {
    case Filter::Bilinear:
      return x < 1 ? 1 - x : 0;
    case Filter::Bicubic: {
      const double a = -0.5;
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    }
    case Filter::Lanczos: {
      auto sinc = [](double v) { return v == 0 ? 1.0 : std::sin(M_PI * v) / (M_PI * v); };
      return x < 3 ? sinc(x) * sinc(x / 3) : 0;
    }
    default:
      return 0;
  }
}
double support(Filter f) {
  return f == Filter::Bilinear ? 1 : f == Filter::Bicubic ? 2 : 3;
}

std::vector<double> resample_1d(const std::vector<double>& in, int out_size, Filter f) {
  const int n = static_cast<int>(in.size());
  const double scale = static_cast<double>(n) / out_size, fs = std::max(1.0, scale),
               sup = support(f) * fs;
  std::vector<double> out(out_size);
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(center - sup + 0.5)),
              hi = std::min(n, static_cast<int>(center + sup + 0.5));
    double s = 0, ws = 0;
    for (int x = lo; x < hi; ++x) {
      double w = kernel(f, (x - center + 0.5) / fs);
      s += w * in[x], ws += w;
    }
    out[i] = s / ws;
  }
  return out;
}

}  // namespace

TEST(Resample, SameSizeIsCopy) {
  RgbImage img = random_image(13, 7, 1);
  EXPECT_EQ(resize(img, 13, 7, Filter::Bicubic).pixels, img.pixels);
}

TEST(Resample, ConstantImageStaysConstant) {
  for (Filter f : {Filter::Bilinear, Filter::Bicubic, Filter::Lanczos}) {
    RgbImage img(37, 23);
    for (int i = 0; i < 37 * 23; ++i)
      img.pixels[3 * i] = 200, img.pixels[3 * i + 1] = 3, img.pixels[3 * i + 2] = 128;
    for (auto [w, h] : {std::pair{10, 5}, std::pair{80, 61}, std::pair{37, 9}, std::pair{5, 23}}) {
      RgbImage out = resize(img, w, h, f);
      ASSERT_EQ(out.width, w);
      ASSERT_EQ(out.height, h);
      for (int i = 0; i < w * h; ++i) {
        EXPECT_EQ(out.pixels[3 * i], 200);
        EXPECT_EQ(out.pixels[3 * i + 1], 3);
        EXPECT_EQ(out.pixels[3 * i + 2], 128);
      }
    }
  }
}

TEST(Resample, AgreesWithDirectComputation) {
  // Smooth content so that the intermediate uint8 rounding of the two-pass scheme stays small.
  RgbImage img(90, 60);
  for (int y = 0; y < 60; ++y)
    for (int x = 0; x < 90; ++x)
      for (int c = 0; c < 3; ++c)
        img.row(y)[3 * x + c] =
            static_cast<uint8_t>(127 + 100 * std::sin(x * 0.11 + c) * std::cos(y * 0.07));
  for (Filter f : {Filter::Bilinear, Filter::Bicubic, Filter::Lanczos}) {
    for (auto [w, h] : {std::pair{33, 21}, std::pair{150, 95}, std::pair{90, 30}}) {
      RgbImage out = resize(img, w, h, f);
      int worst = 0;
      for (int c = 0; c < 3; ++c) {
        // rows first (horizontal pass), then columns, in double
        std::vector<std::vector<double>> tmp(60);
        for (int y = 0; y < 60; ++y) {
          std::vector<double> row(90);
          for (int x = 0; x < 90; ++x) row[x] = img.row(y)[3 * x + c];
          tmp[y] = resample_1d(row, w, f);
        }
        for (int x = 0; x < w; ++x) {
          std::vector<double> col(60);
          for (int y = 0; y < 60; ++y) col[y] = tmp[y][x];
          std::vector<double> r = resample_1d(col, h, f);
          for (int y = 0; y < h; ++y) {
            int ref = static_cast<int>(std::lround(std::clamp(r[y], 0.0, 255.0)));
            worst = std::max(worst, std::abs(ref - out.row(y)[3 * x + c]));
          }
        }
      }
      EXPECT_LE(worst, 2) << filter_name(f) << " " << w << "x" << h;
    }
  }
}

TEST(Resample, Crop) {
  RgbImage img = random_image(10, 8, 3);
  RgbImage c = crop(img, 2, 3, 4, 5);
  ASSERT_EQ(c.width, 4);
  ASSERT_EQ(c.height, 5);
  EXPECT_EQ(c.row(0)[0], img.row(3)[6]);
  EXPECT_EQ(c.row(4)[11], img.row(7)[17]);
  EXPECT_THROW(crop(img, 8, 0, 4, 4), Error);
}

TEST(Resample, CapLongSide) {
  RgbImage big = random_image(2000, 1000, 4);
  RgbImage capped = cap_long_side(big, 1024);
  EXPECT_EQ(capped.width, 1024);
  EXPECT_EQ(capped.height, 512);
  RgbImage tall = random_image(300, 2048, 5);
  RgbImage t = cap_long_side(tall, 1024);
  EXPECT_EQ(t.height, 1024);
  EXPECT_EQ(t.width, 150);
  RgbImage small = random_image(100, 50, 6);
  EXPECT_EQ(cap_long_side(small, 1024).pixels, small.pixels);
}

TEST(Resample, FilterCodes) {
  EXPECT_EQ(filter_from_pil(3), Filter::Bicubic);
  EXPECT_EQ(filter_from_pil(2), Filter::Bilinear);
  EXPECT_EQ(filter_from_pil(1), Filter::Lanczos);
  EXPECT_THROW(filter_from_pil(7), Error);
  EXPECT_EQ(filter_from_name("lanczos"), Filter::Lanczos);
  EXPECT_THROW(filter_from_name("cubic"), Error);
}

namespace {

// tests/data/resample/make_fixtures.py's input: v = (200 x / w + 55 y / h + 64 [tile parity] +
// hashed noise in [0, 64)) mod 256, in 32-bit unsigned arithmetic.
RgbImage synthetic(int w, int h) {
  RgbImage img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (uint32_t c = 0; c < 3; ++c) {
        uint32_t n = (static_cast<uint32_t>(x) * 73856093u) ^
                     (static_cast<uint32_t>(y) * 19349663u) ^ (c * 83492791u);
        n ^= n >> 13;
        n *= 0x5BD1E995u;
        n ^= n >> 15;
        const uint64_t grad = uint64_t(x) * 200 / w + uint64_t(y) * 55 / h,
                       tile = ((x / 97 + y / 61) % 2) * 64;
        img.row(y)[3 * x + c] = static_cast<uint8_t>((grad + tile + (n & 63)) % 256);
      }
  return img;
}

// One of the fixture's paths, as the project takes it.
RgbImage resample_path(const std::string& path, const RgbImage& img) {
  const Qwen2VLImageConfig qwen;  // the Qwen2-VL processor's defaults (bicubic, 28-px factor)
  auto qwen_resize = [&](const RgbImage& im) {
    auto [h, w] =
        smart_resize(im.height, im.width, qwen.factor(), qwen.min_pixels, qwen.max_pixels);
    return resize(im, w, h, qwen.resample);
  };
  VitImageConfig vit;  // the teacher's 384 px, bilinear
  vit.image_size = 384;
  vit.resample = Filter::Bilinear;
  if (path == "cap_lanczos") return cap_long_side(img, 1024);
  if (path == "cap_lanczos+qwen2vl_bicubic") return qwen_resize(cap_long_side(img, 1024));
  if (path == "qwen2vl_bicubic") return qwen_resize(img);
  if (path == "vit_resize_centercrop_bilinear") {
    vit.mode = VitResizeMode::ResizeCenterCrop;
    return vit_geometry(img, vit);
  }
  if (path == "vit_direct_bilinear") {
    vit.mode = VitResizeMode::Direct;
    return vit_geometry(img, vit);
  }
  throw Error("large.json: unknown path " + path);
}

}  // namespace

// Images over the 1024-px cap (3000x2000, 4000x300, 1537x2049) through every resampling path the
// project takes: byte for byte what Pillow 9.4 and torchvision give (tests/data/resample).
TEST(Resample, LargeImagesAsPillowOnEveryPath) {
  const json doc = read_json_file(std::string(EMOVLM_TEST_DATA_DIR) + "/resample/large.json");
  int checked = 0;
  for (const json& c : doc.at("cases")) {
    const RgbImage img = synthetic(c["input"][0].get<int>(), c["input"][1].get<int>());
    for (const json& o : c.at("outputs")) {
      const std::string what = o["path"].get<std::string>() + " of " + c["input"].dump();
      const RgbImage got = resample_path(o["path"], img);
      ASSERT_EQ(got.width, o["size"][0].get<int>()) << what;
      ASSERT_EQ(got.height, o["size"][1].get<int>()) << what;
      int wrong = 0;
      for (const json& sp : o["samples"]) {
        const uint8_t* px = got.row(sp[1].get<int>()) + 3 * sp[0].get<int>();
        for (int k = 0; k < 3; ++k)
          if (px[k] != sp[2 + k].get<int>() && ++wrong <= 3)
            ADD_FAILURE() << what << ": pixel (" << sp[0] << ", " << sp[1] << ") channel " << k
                          << " is " << int(px[k]) << ", Pillow " << sp[2 + k];
      }
      EXPECT_EQ(hex64(fnv1a64(got.pixels.data(), got.pixels.size())),
                o["fnv1a64"].get<std::string>())
          << what;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 15);
}
