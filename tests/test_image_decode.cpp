// Decoding: the reference images as Pillow decodes them, every PNG color type, GIF and BMP as
// Pillow reads them, and bad files.
#include <gtest/gtest.h>
#include <png.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/image/image.h"
#include "test_util.h"

using namespace emovlm;
using emovlm::test::TempDir;

namespace {

// Writes a PNG of any color type / bit depth with libpng (samples given big-endian for 16 bit).
void write_png(const std::string& path, int w, int h, int color, int depth,
               const std::vector<uint8_t>& raw, const std::vector<png_color>& palette = {},
               bool interlace = false) {
  FILE* fp = std::fopen(path.c_str(), "wb");
  ASSERT_NE(fp, nullptr);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  png_init_io(png, fp);
  png_set_IHDR(png, info, w, h, depth, color, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  png_write_info(png, info);
  const size_t rowbytes = raw.size() / h;
  std::vector<png_bytep> rows(h);
  for (int y = 0; y < h; ++y) rows[y] = const_cast<png_bytep>(raw.data() + y * rowbytes);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(fp);
}

std::vector<uint8_t> rgb_of(const TensorView& t) {
  return std::vector<uint8_t>(t.data, t.data + t.nbytes);
}

std::string decode_error(const std::string& path, DecodeOptions opt = {}) {
  try {
    decode_image_file(path, opt);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// Every image of the fixture: PNG decodes exactly as Pillow's convert("RGB"), JPEG within 1 level.
TEST(ImageDecode, MatchesPillowOnReferenceImages) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  json cases = read_json_file(test::ref_path("qwen2vl_tiny/cases.json"));
  auto expected = SafeTensorsFile::open(test::ref_path("qwen2vl_tiny/expected.safetensors"));
  ASSERT_FALSE(cases["images"].empty());
  for (const auto& c : cases["images"]) {
    const std::string name = c["name"], file = c["file"];
    RgbImage img = decode_image_file(test::ref_path("images/" + file));
    const TensorView& rgb = expected->get(name + ".rgb");
    ASSERT_EQ(rgb.shape, (std::vector<int64_t>{img.height, img.width, 3})) << name;
    EXPECT_EQ(img.width, c["width"].get<int>());
    std::vector<uint8_t> ref = rgb_of(rgb);
    int max_diff = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      max_diff = std::max(max_diff, std::abs(int(ref[i]) - int(img.pixels[i])));
    const bool jpeg = file.size() > 4 && (file.substr(file.size() - 4) == ".jpg" ||
                                          file.substr(file.size() - 5) == ".jpeg");
    EXPECT_LE(max_diff, jpeg ? 1 : 0) << name << " (" << file << ")";
  }
}

TEST(ImageDecode, PngColorTypesConvertLikePillow) {
  TempDir dir;
  const int w = 5, h = 3;
  // 8-bit gray
  std::vector<uint8_t> g(w * h);
  for (int i = 0; i < w * h; ++i) g[i] = static_cast<uint8_t>(i * 17);
  write_png(dir / "g8.png", w, h, PNG_COLOR_TYPE_GRAY, 8, g);
  RgbImage a = decode_image_file(dir / "g8.png");
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(a.pixels[3 * i + c], g[i]);

  // 16-bit gray: Pillow's I;16 -> RGB clips at 255
  std::vector<uint8_t> g16(w * h * 2);
  const uint16_t vals[] = {0, 7, 255, 256, 40000};
  for (int i = 0; i < w * h; ++i) {
    uint16_t v = vals[i % 5];
    g16[2 * i] = v >> 8, g16[2 * i + 1] = v & 0xff;
  }
  write_png(dir / "g16.png", w, h, PNG_COLOR_TYPE_GRAY, 16, g16);
  RgbImage b = decode_image_file(dir / "g16.png");
  for (int i = 0; i < w * h; ++i) EXPECT_EQ(b.pixels[3 * i], std::min<int>(vals[i % 5], 255)) << i;

  // 16-bit RGBA: high byte kept, alpha dropped
  std::vector<uint8_t> rgba16(w * h * 8);
  for (size_t i = 0; i < rgba16.size(); ++i) rgba16[i] = static_cast<uint8_t>(i * 31);
  write_png(dir / "rgba16.png", w, h, PNG_COLOR_TYPE_RGBA, 16, rgba16);
  RgbImage c = decode_image_file(dir / "rgba16.png");
  for (int i = 0; i < w * h; ++i)
    for (int k = 0; k < 3; ++k) EXPECT_EQ(c.pixels[3 * i + k], rgba16[8 * i + 2 * k]);

  // 8-bit RGBA with transparency: alpha dropped, not composited
  std::vector<uint8_t> rgba(w * h * 4);
  for (size_t i = 0; i < rgba.size(); ++i) rgba[i] = static_cast<uint8_t>(i % 4 == 3 ? 0 : i * 5);
  write_png(dir / "rgba8.png", w, h, PNG_COLOR_TYPE_RGBA, 8, rgba);
  RgbImage d = decode_image_file(dir / "rgba8.png");
  for (int i = 0; i < w * h; ++i)
    for (int k = 0; k < 3; ++k) EXPECT_EQ(d.pixels[3 * i + k], rgba[4 * i + k]);

  // gray + alpha
  std::vector<uint8_t> ga(w * h * 2);
  for (int i = 0; i < w * h; ++i) ga[2 * i] = static_cast<uint8_t>(200 - i), ga[2 * i + 1] = 10;
  write_png(dir / "ga.png", w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 8, ga);
  RgbImage e = decode_image_file(dir / "ga.png");
  for (int i = 0; i < w * h; ++i) EXPECT_EQ(e.pixels[3 * i + 1], 200 - i);

  // palette, 4 bits per index
  std::vector<png_color> pal = {{10, 20, 30}, {200, 100, 50}, {0, 255, 0}};
  std::vector<uint8_t> idx(h * 3);  // 5 pixels at 4 bits = 3 bytes per row
  for (int y = 0; y < h; ++y) idx[3 * y] = 0x01, idx[3 * y + 1] = 0x20, idx[3 * y + 2] = 0x10;
  write_png(dir / "pal.png", w, h, PNG_COLOR_TYPE_PALETTE, 4, idx, pal);
  RgbImage f = decode_image_file(dir / "pal.png");
  const int expect_idx[] = {0, 1, 2, 0, 1};
  for (int x = 0; x < w; ++x) {
    EXPECT_EQ(f.pixels[3 * x], pal[expect_idx[x]].red) << x;
    EXPECT_EQ(f.pixels[3 * x + 2], pal[expect_idx[x]].blue) << x;
  }

  // 1-bit gray: 0 -> 0, 1 -> 255 (Pillow's mode "1")
  std::vector<uint8_t> bits(h, 0xA0);  // 1,0,1,0,0
  write_png(dir / "g1.png", w, h, PNG_COLOR_TYPE_GRAY, 1, bits);
  RgbImage g1 = decode_image_file(dir / "g1.png");
  EXPECT_EQ(g1.pixels[0], 255);
  EXPECT_EQ(g1.pixels[3], 0);
  EXPECT_EQ(g1.pixels[6], 255);

  // interlaced RGB decodes to the same pixels as non-interlaced
  std::vector<uint8_t> rgb(w * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<uint8_t>(i * 13);
  write_png(dir / "il.png", w, h, PNG_COLOR_TYPE_RGB, 8, rgb, {}, true);
  EXPECT_EQ(decode_image_file(dir / "il.png").pixels, rgb);
}

TEST(ImageDecode, EncodeDecodeRoundTrip) {
  TempDir dir;
  RgbImage img(31, 17);
  for (size_t i = 0; i < img.pixels.size(); ++i)
    img.pixels[i] = static_cast<uint8_t>((i * 7) % 256);
  write_image_file(dir / "x.png", img);
  EXPECT_EQ(decode_image_file(dir / "x.png").pixels, img.pixels);
  // JPEG is lossy: a smooth image survives at high quality within a few levels
  RgbImage smooth(64, 48);
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x)
      for (int c = 0; c < 3; ++c)
        smooth.row(y)[3 * x + c] = static_cast<uint8_t>(x * 2 + y + c * 20);
  write_image_file(dir / "x.jpg", smooth, 95);
  RgbImage back = decode_image_file(dir / "x.jpg");
  ASSERT_EQ(back.width, 64);
  int max_diff = 0;
  for (size_t i = 0; i < back.pixels.size(); ++i)
    max_diff = std::max(max_diff, std::abs(int(back.pixels[i]) - int(smooth.pixels[i])));
  EXPECT_LE(max_diff, 8);
  EXPECT_THROW(write_image_file(dir / "x.gif", img), Error);
}

TEST(ImageDecode, BadFilesNameTheFile) {
  TempDir dir;
  test::write_test_image(dir / "good.png", 233, 150, 40);
  test::write_test_image(dir / "good.jpg", 100, 75, 90);
  std::string png = read_file(dir / "good.png");
  std::string jpg = read_file(dir / "good.jpg");
  write_file_atomic(dir / "trunc.png", png.substr(0, png.size() / 2));
  write_file_atomic(dir / "trunc.jpg", jpg.substr(0, jpg.size() / 2));
  write_file_atomic(dir / "anim.gif", std::string("GIF89a") + std::string(40, '\0'));
  write_file_atomic(dir / "noise.jpg", std::string("hello, this is not an image"));
  write_file_atomic(dir / "empty.png", "");
  std::string bad_crc = png;
  bad_crc[20] ^= 0x55;  // inside IHDR
  write_file_atomic(dir / "crc.png", bad_crc);

  struct Case {
    std::string file, expect;
  };
  for (const Case& c : std::vector<Case>{{"trunc.png", "corrupt PNG"},
                                         {"trunc.jpg", "truncated"},
                                         {"anim.gif", "corrupt GIF"},
                                         {"noise.jpg", "not a JPEG, PNG, GIF"},
                                         {"empty.png", "empty file"},
                                         {"crc.png", "corrupt PNG"},
                                         {"missing.png", "cannot open"}}) {
    std::string err = decode_error(dir / c.file);
    EXPECT_NE(err.find(c.expect), std::string::npos) << c.file << ": " << err;
    EXPECT_NE(err.find(dir / c.file), std::string::npos) << c.file << ": " << err;
  }
}

TEST(ImageDecode, DecompressionBombLimit) {
  TempDir dir;
  const std::string path = dir / "b.png";
  test::write_test_image(path, 233, 150, 7);  // 34950 pixels
  DecodeOptions small;
  small.max_pixels = 34949;
  EXPECT_NE(decode_error(path, small).find("exceeds the limit of 34949 pixels"), std::string::npos);
  small.max_pixels = 34950;
  EXPECT_EQ(decode_error(path, small), "");
  small.max_pixels = 0;  // no limit
  EXPECT_EQ(decode_error(path, small), "");
  EXPECT_EQ(DecodeOptions{}.max_pixels, 89478485);
}

// tests/data/formats: GIF, BMP and WebP files (saved by Pillow, or assembled byte by byte for the
// layouts Pillow does not write) with what Pillow 9.4's Image.open(f).convert("RGB") gives for
// each (make_fixtures.py there). Every file must decode to exactly those pixels; WebP files in a
// build without libwebp must be refused with an error that says so.
TEST(ImageDecode, GifBmpWebpAsPillowReadsThem) {
  const std::string dir = std::string(EMOVLM_TEST_DATA_DIR) + "/formats";
  const std::string suffix = ".expected.png";
  std::set<std::string> checked;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string expected = e.path().string();
    if (expected.size() <= suffix.size() ||
        expected.compare(expected.size() - suffix.size(), suffix.size(), suffix))
      continue;
    const std::string file = expected.substr(0, expected.size() - suffix.size());
    SCOPED_TRACE(file);
    if (file.size() > 5 && file.compare(file.size() - 5, 5, ".webp") == 0 && !webp_supported()) {
      EXPECT_NE(decode_error(file).find("this build has no libwebp"), std::string::npos)
          << decode_error(file);
      continue;
    }
    RgbImage want = decode_image_file(expected), got;
    ASSERT_NO_THROW(got = decode_image_file(file));
    ASSERT_EQ(got.width, want.width);
    ASSERT_EQ(got.height, want.height);
    size_t differ = 0;
    for (size_t i = 0; i < got.pixels.size(); ++i) differ += got.pixels[i] != want.pixels[i];
    EXPECT_EQ(differ, 0u) << "of " << got.pixels.size() << " samples";
    checked.insert(std::filesystem::path(file).filename().string());
  }
  EXPECT_GE(checked.size(), webp_supported() ? 29u : 24u);
  for (const char* f : {"pillow_interlaced.gif", "own_full_table_no_clear.gif",
                        "offset_local_transparent.gif", "interlaced_short_palette.gif",
                        "rgb565_bitfields.bmp", "core_header_p8.bmp", "top_down24.bmp"})
    EXPECT_EQ(checked.count(f), 1u) << f;
  if (webp_supported())
    for (const char* f : {"lossy.webp", "lossless_alpha.webp", "lossy_alpha.webp", "animated.webp"})
      EXPECT_EQ(checked.count(f), 1u) << f;
  // the format comes from the content, not the name
  TempDir tmp;
  write_file_atomic(tmp / "really_a_gif.jpg", read_file(dir + "/two_frames.gif"));
  EXPECT_EQ(decode_image_file(tmp / "really_a_gif.jpg").pixels,
            decode_image_file(dir + "/two_frames.gif").pixels);
}

TEST(ImageDecode, GifAndBmpErrorsNameTheFile) {
  const std::string dir = std::string(EMOVLM_TEST_DATA_DIR) + "/formats";
  TempDir tmp;
  const std::string gif = read_file(dir + "/pillow_plain.gif"),
                    bmp = read_file(dir + "/pillow_rgb24.bmp");
  write_file_atomic(tmp / "cut.gif", gif.substr(0, gif.size() * 2 / 3));
  write_file_atomic(tmp / "cut.bmp", bmp.substr(0, bmp.size() - 40));
  // a 2x2 GIF without palette whose first LZW code (3 bits, LSB first) is 7: not a string yet
  const std::string header = std::string("GIF89a") + std::string("\x02\x00\x02\x00\x00\x00\x00", 7);
  const std::string image =
      std::string(",\0\0\0\0\x02\0\x02\0\0", 10) + std::string("\x02\x01\x07\x00;", 5);
  write_file_atomic(tmp / "badcode.gif", header + image);
  write_file_atomic(tmp / "noimage.gif", header + ";");
  std::string huge = header + image;
  huge[6] = huge[7] = huge[8] = huge[9] = '\xff';  // a 65535 x 65535 screen
  write_file_atomic(tmp / "huge.gif", huge);
  write_file_atomic(tmp / "x.webp",
                    std::string("RIFF\0\0\0\0WEBPVP8 ", 16) + std::string(20, '\0'));
  const std::string lossy = read_file(dir + "/lossy.webp");
  write_file_atomic(tmp / "cut.webp", lossy.substr(0, lossy.size() / 2));
  struct Case {
    std::string file, expect;
  };
  for (const Case& c : std::vector<Case>{
           {tmp / "cut.gif", "corrupt GIF: truncated"},
           {tmp / "cut.bmp", "corrupt BMP: truncated pixel data"},
           {tmp / "badcode.gif", "corrupt GIF: LZW code 7"},
           {tmp / "noimage.gif", "no image"},
           {tmp / "huge.gif", "exceeds the limit"},
           {tmp / "x.webp", webp_supported() ? "corrupt WebP" : "unsupported image format WebP"},
           {tmp / "cut.webp", webp_supported() ? "corrupt WebP" : "unsupported image format WebP"},
           {dir + "/rle8.bmp", "unsupported BMP compression RLE8"}}) {
    std::string err = decode_error(c.file);
    EXPECT_NE(err.find(c.expect), std::string::npos) << c.file << ": " << err;
    EXPECT_NE(err.find(c.file), std::string::npos) << c.file << ": " << err;
  }
}

// Bad input gets an Error, never a crash or a read out of bounds: every format fixture with bytes
// flipped, cut short or with its header fields scrambled (seeded; run under ASan too).
TEST(ImageDecode, DamagedFilesFailCleanly) {
  const std::string dir = std::string(EMOVLM_TEST_DATA_DIR) + "/formats";
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string f = e.path().string();
    if (f.find(".expected.") == std::string::npos && f.find(".py") == std::string::npos)
      files.push_back(f);
  }
  std::sort(files.begin(), files.end());
  if (file_exists(
          test::ref_path("qwen2vl_tiny/cases.json")))  // the fixture's PNG and JPEG files too
    for (const test::RefImage& im : test::reference_images()) files.push_back(im.path);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] {  // xorshift64
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return state;
  };
  int decoded = 0, refused = 0;
  for (const auto& f : files) {
    const std::string original = read_file(f);
    for (int trial = 0; trial < 60; ++trial) {
      std::string bytes = original;
      const int kind = trial % 3;
      if (kind == 0) {  // a few random bytes anywhere
        for (int k = 0; k < 4; ++k) bytes[next() % bytes.size()] = static_cast<char>(next());
      } else if (kind == 1) {  // the header region scrambled (sizes, offsets, code sizes, palettes)
        for (int k = 0; k < 3; ++k)
          bytes[next() % std::min<size_t>(bytes.size(), 64)] = static_cast<char>(next());
      } else {  // cut short
        bytes.resize(next() % bytes.size());
      }
      DecodeOptions small;
      small.max_pixels = 1 << 22;  // a scrambled size stays affordable
      try {
        RgbImage img = decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()),
                                           bytes.size(), f, small);
        EXPECT_EQ(img.pixels.size(), static_cast<size_t>(img.width) * img.height * 3);
        ++decoded;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
        ++refused;
      }
    }
  }
  EXPECT_GT(decoded, 0);
  EXPECT_GT(refused, 0);
}
