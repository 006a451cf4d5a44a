// Decode admission by declared size: every decoder reports an image's size to DecodeOptions::admit
// before allocating it (a refusal reaches the caller as thrown), and the shared pixel budget.
#include <gtest/gtest.h>
#include <png.h>

#include <atomic>
#include <thread>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/image/image.h"
#include "emovlm/image/pixel_budget.h"
#include "test_util.h"

using namespace emovlm;

namespace {

struct Refused {
  int64_t w, h;
};

// A 35-byte GIF whose logical screen is 9000x9000 (one 1x1 frame).
std::string gif_bomb() {
  std::string g = "GIF89a";
  g += std::string("\x28\x23\x28\x23", 4);
  g += std::string("\x80\x00\x00", 3);
  g += std::string("\x00\x00\x00\xff\xff\xff", 6);
  g += std::string(",\x00\x00\x00\x00\x01\x00\x01\x00\x00", 10);
  g += std::string("\x02\x02\x44\x01\x00", 5);
  return g + ";";
}

}  // namespace

// Each format's declared size reaches admit, and what admit throws comes out as it is (the JPEG
// and PNG decoders' error handling included).
TEST(DecodeAdmission, EveryFormatAsksBeforeAllocating) {
  const std::string formats = std::string(EMOVLM_TEST_DATA_DIR) + "/formats/";
  const std::string ref = std::string(EMOVLM_TEST_DATA_DIR) + "/reference/images/";
  struct Case {
    std::string path;
    bool needs_webp;
  };
  const Case cases[] = {{ref + "img_c.jpg", false},
                        {ref + "img_b.png", false},
                        {formats + "pillow_interlaced.gif", false},
                        {formats + "pillow_rgb24.bmp", false},
                        {formats + "lossy.webp", true}};
  for (const Case& c : cases) {
    if (c.needs_webp && !webp_supported()) continue;
    const RgbImage whole = decode_image_file(c.path);
    DecodeOptions o;
    int64_t seen_w = 0, seen_h = 0;
    o.admit = [&](int64_t w, int64_t h) {
      seen_w = w, seen_h = h;
      throw Refused{w, h};
    };
    try {
      decode_image_file(c.path, o);
      ADD_FAILURE() << c.path << ": decoded although admit refused it";
    } catch (const Refused& r) {
      EXPECT_EQ(r.w, whole.width) << c.path;
      EXPECT_EQ(r.h, whole.height) << c.path;
    }
    EXPECT_EQ(seen_w * seen_h, static_cast<int64_t>(whole.width) * whole.height) << c.path;
    // admitted: the same pixels as without admission
    o.admit = [](int64_t, int64_t) {};
    EXPECT_EQ(decode_image_file(c.path, o).pixels, whole.pixels) << c.path;
  }
}

TEST(DecodeAdmission, DeclaredSizeOfABombBeforeAnyPixel) {
  const std::string g = gif_bomb();
  ASSERT_EQ(g.size(), 35u);
  DecodeOptions o;
  o.admit = [](int64_t w, int64_t h) { throw Refused{w, h}; };
  try {
    decode_image_memory(reinterpret_cast<const uint8_t*>(g.data()), g.size(), "bomb.gif", o);
    FAIL() << "decoded";
  } catch (const Refused& r) {
    EXPECT_EQ(r.w, 9000);
    EXPECT_EQ(r.h, 9000);
  }
}

namespace {

// A PNG of `img` written by libpng: 8-bit RGB, or 16-bit RGBA (each sample v as v * 257, alpha
// 0x1234), interlaced (Adam7) or not.
std::string png_with(const RgbImage& img, bool rgba16, bool interlaced) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_set_write_fn(
      png, &out,
      [](png_structp p, png_bytep d, png_size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(d), n);
      },
      nullptr);
  png_set_IHDR(png, info, img.width, img.height, rgba16 ? 16 : 8,
               rgba16 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB,
               interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  std::vector<std::vector<uint8_t>> rows(img.height);
  std::vector<png_bytep> ptrs;
  for (int y = 0; y < img.height; ++y) {
    for (int x = 0; x < img.width; ++x)
      for (int c = 0; c < (rgba16 ? 4 : 3); ++c) {
        const uint8_t v = c < 3 ? img.row(y)[3 * x + c] : 0x12;
        if (rgba16) {
          rows[y].push_back(v);  // big-endian 16-bit: the high byte first
          rows[y].push_back(c < 3 ? v : 0x34);
        } else {
          rows[y].push_back(v);
        }
      }
    ptrs.push_back(rows[y].data());
  }
  png_write_image(png, ptrs.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

}  // namespace

// Non-interlaced PNGs are read row by row, interlaced ones whole: the same pixels either way.
TEST(DecodeAdmission, PngRowByRowAndWholeGiveTheSamePixels) {
  RgbImage img(37, 23);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 31 % 251);
  for (bool rgba16 : {false, true})
    for (bool interlaced : {false, true}) {
      const std::string png = png_with(img, rgba16, interlaced);
      RgbImage back =
          decode_image_memory(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "x.png");
      EXPECT_EQ(back.pixels, img.pixels) << "rgba16 " << rgba16 << ", interlaced " << interlaced;
    }
}

TEST(PixelBudget, LeasesHoldAndGiveBack) {
  PixelBudget b(100);
  auto a = b.acquire(60, std::chrono::milliseconds(0));
  ASSERT_TRUE(a);
  EXPECT_EQ(b.in_use(), 60);
  EXPECT_FALSE(b.acquire(50, std::chrono::milliseconds(10)));  // does not fit now
  EXPECT_FALSE(b.acquire(101, std::chrono::milliseconds(0)));  // never fits
  a->shrink(20);
  EXPECT_EQ(b.in_use(), 20);
  auto c = b.acquire(80, std::chrono::milliseconds(0));
  ASSERT_TRUE(c);
  {
    PixelBudget::Lease moved = std::move(*c);
    EXPECT_EQ(b.in_use(), 100);
  }
  EXPECT_EQ(b.in_use(), 20);
  a.reset();
  EXPECT_EQ(b.in_use(), 0);
}

TEST(PixelBudget, WaitsForRoom) {
  PixelBudget b(100);
  auto first = b.acquire(100, std::chrono::milliseconds(0));
  ASSERT_TRUE(first);
  std::atomic<bool> got{false};
  std::thread waiter([&] { got = b.acquire(70, std::chrono::seconds(60)).has_value(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  first->release();
  waiter.join();
  EXPECT_TRUE(got);
}
