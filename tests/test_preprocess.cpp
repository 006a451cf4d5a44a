// Qwen2-VL and ViT preprocessing against the reference processors' outputs (fixture-driven).
#include <gtest/gtest.h>

#include "emovlm/core/error.h"
#include "emovlm/image/preprocess.h"
#include "test_util.h"

using namespace emovlm;

namespace {

RgbImage rgb_from_fixture(const TensorView& t) {
  RgbImage img(static_cast<int>(t.shape[1]), static_cast<int>(t.shape[0]));
  std::memcpy(img.pixels.data(), t.data, t.nbytes);
  return img;
}

bool is_png(const std::string& file) {
  return file.size() > 4 && file.substr(file.size() - 4) == ".png";
}

}  // namespace

TEST(SmartResize, KnownSizes) {
  EXPECT_EQ(smart_resize(48, 64, 28, 3136, 12845056), (std::pair<int, int>{56, 56}));
  EXPECT_EQ(smart_resize(150, 233, 28, 3136, 12845056), (std::pair<int, int>{140, 224}));
  // round half to even: 42/28 = 1.5 -> 2, 70/28 = 2.5 -> 2
  EXPECT_EQ(smart_resize(42, 70, 28, 1, 1 << 30), (std::pair<int, int>{56, 56}));
  // too many pixels: scaled down, floored to the factor
  auto [h, w] = smart_resize(4000, 6000, 28, 3136, 1003520);
  EXPECT_LE(int64_t(h) * w, 1003520);
  EXPECT_EQ(h % 28, 0);
  EXPECT_EQ(w % 28, 0);
  // too few pixels (including sizes that round to zero): scaled up, ceiled to the factor
  auto [h2, w2] = smart_resize(10, 1000, 28, 3136, 12845056);
  EXPECT_EQ(h2, 28);
  EXPECT_EQ(w2, 560);
  EXPECT_THROW(smart_resize(1, 500, 28, 3136, 12845056), Error);  // aspect ratio over 200
}

TEST(Qwen2VLPreprocess, ConfigFromReference) {
  const std::string path = test::ref_path("qwen2vl_tiny/preprocessor_config.json");
  if (!file_exists(path)) GTEST_SKIP() << "fixture file missing: " << path;
  json want = read_json_file(path);
  Qwen2VLImageConfig c = Qwen2VLImageConfig::from_dir(test::ref_path("qwen2vl_tiny"));
  EXPECT_EQ(c.min_pixels, want["min_pixels"].get<int64_t>());
  EXPECT_EQ(c.max_pixels, want["max_pixels"].get<int64_t>());
  EXPECT_EQ(c.patch_size, want["patch_size"].get<int>());
  EXPECT_EQ(c.resample, filter_from_pil(want["resample"].get<int>()));
  for (int k = 0; k < 3; ++k) {
    EXPECT_FLOAT_EQ(c.image_mean[k], want["image_mean"][k].get<float>()) << k;
    EXPECT_FLOAT_EQ(c.image_std[k], want["image_std"][k].get<float>()) << k;
  }
  json bad = {{"min_pixels", 100}, {"max_pixels", 10}};
  EXPECT_THROW(Qwen2VLImageConfig::from_json(bad, "x.json"), Error);
  json newer = {{"size", {{"shortest_edge", 1000}, {"longest_edge", 20000}}}};
  EXPECT_EQ(Qwen2VLImageConfig::from_json(newer, "y.json").max_pixels, 20000);
}

// From NAME.rgb and from PNG files: within 1e-5 of the PIL-backed processor, grid_thw exact.
TEST(Qwen2VLPreprocess, MatchesReferenceProcessor) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/preprocessor_config.json");
  const std::string dir = test::ref_path("qwen2vl_tiny");
  json cases = read_json_file(dir + "/cases.json");
  auto expected = SafeTensorsFile::open(dir + "/expected.safetensors");
  Qwen2VLImageConfig cfg = Qwen2VLImageConfig::from_dir(dir);
  int checked = 0;
  for (const auto& c : cases["images"]) {
    const std::string name = c["name"], file = c["file"];
    const std::string proc = c.value("reference_processor", std::string("pil"));
    const TensorView& ref = expected->get(name + ".pixel_values." + proc);
    std::vector<int64_t> grid = c["grid_thw." + proc].get<std::vector<int64_t>>();

    Qwen2VLPixels px = preprocess_qwen2vl(rgb_from_fixture(expected->get(name + ".rgb")), cfg);
    EXPECT_EQ(std::vector<int64_t>(px.grid_thw.begin(), px.grid_thw.end()), grid) << name;
    EXPECT_LE(test::max_abs_diff(px.pixel_values, ref), 1e-5) << name << " from .rgb";

    Qwen2VLPixels from_file =
        preprocess_qwen2vl(decode_image_file(test::ref_path("images/" + file)), cfg);
    if (is_png(file))
      EXPECT_LE(test::max_abs_diff(from_file.pixel_values, ref), 1e-5) << name << " from " << file;
    else
      EXPECT_EQ(from_file.pixel_values.shape, ref.shape) << name << " from " << file;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// ViT: the reference teacher's Resize + CenterCrop, and the HF processor's direct resize.
TEST(VitPreprocess, MatchesReference) {
  EMOVLM_NEED_FIXTURE("vit_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("vit_tiny/expected.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const std::string dir = test::ref_path("vit_tiny");
  json cases = read_json_file(dir + "/cases.json");
  auto expected = SafeTensorsFile::open(dir + "/expected.safetensors");
  // The Pillow-decoded pixels live in the Qwen2-VL fixture; PNG files decode identically.
  auto qwen = SafeTensorsFile::open(test::ref_path("qwen2vl_tiny/expected.safetensors"));
  VitImageConfig cfg = VitImageConfig::from_dir(dir);
  EXPECT_EQ(cfg.resample, Filter::Bilinear);
  int checked = 0;
  for (const auto& c : cases["images"]) {
    const std::string name = c["name"], file = c["file"];
    RgbImage img;
    if (qwen->contains(name + ".rgb"))
      img = rgb_from_fixture(qwen->get(name + ".rgb"));
    else if (is_png(file))
      img = decode_image_file(test::ref_path("images/" + file));
    else
      continue;  // a JPEG without Pillow's pixels cannot be compared at 1e-5
    VitImageConfig crop_cfg = cfg;
    crop_cfg.mode = VitResizeMode::ResizeCenterCrop;
    FloatArray a = preprocess_vit(img, crop_cfg);
    const TensorView& ref_a =
        expected->get(c.value("pixel_values", name + ".pixel_values.resize_centercrop"));
    EXPECT_LE(test::max_abs_diff(a, ref_a), 1e-5) << name << " resize_centercrop";
    if (expected->contains(name + ".pixel_values.hf_pil")) {
      VitImageConfig direct = cfg;
      direct.mode = VitResizeMode::Direct;
      FloatArray b = preprocess_vit(img, direct);
      EXPECT_LE(test::max_abs_diff(b, expected->get(name + ".pixel_values.hf_pil")), 1e-5)
          << name << " hf_pil";
    }
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// timm's evaluation transform (ResNet, VGG): resize to floor(size / crop_pct) with the named
// interpolation (shorter side, or both for crop_mode squash), center crop, mean/std; and the
// reference teacher's transform as crop_pct 1. Against torchvision's transforms on Pillow images.
// 1e-5: one uint8 step is 1/255/std > 0.017, so the geometry and the resampling must be exact; what
// is left is the float32 rounding of x/255 (a few 1e-7).
TEST(TimmPreprocess, MatchesTorchvisionTransforms) {
  const std::string dir = std::string(EMOVLM_TEST_DATA_DIR) + "/cnn/preprocess";
  json cases = read_json_file(dir + "/cases.json");
  auto expected = SafeTensorsFile::open(dir + "/expected.safetensors");
  int checked = 0;
  for (const auto& c : cases["cases"]) {
    const std::string name = c["name"];
    VitImageConfig cfg = VitImageConfig::from_timm(c["pretrained_cfg"], name);
    RgbImage img = decode_image_file(test::ref_path("images/" + c["image"].get<std::string>()));
    FloatArray a = preprocess_vit(img, cfg);
    const TensorView& ref = expected->get(name);
    ASSERT_EQ(a.shape, std::vector<int64_t>(ref.shape.begin(), ref.shape.end())) << name;
    EXPECT_LE(test::max_abs_diff(a.data, test::as_floats(ref)), 1e-5) << name;
    // the config survives its round trip through pretrained_cfg
    VitImageConfig back = VitImageConfig::from_timm(cfg.to_timm(), name);
    EXPECT_EQ(back.image_size, cfg.image_size);
    EXPECT_EQ(back.crop_pct, cfg.crop_pct);
    EXPECT_EQ(back.mode, cfg.mode);
    EXPECT_EQ(back.resample, cfg.resample);
    EXPECT_EQ(back.image_mean, cfg.image_mean);
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(cases["cases"].size()));
  EXPECT_GE(checked, 4);
}

TEST(TimmPreprocess, ConfigErrorsNameTheField) {
  json ok = {{"input_size", {3, 224, 224}},
             {"interpolation", "bicubic"},
             {"crop_pct", 0.95},
             {"crop_mode", "center"}};
  VitImageConfig c = VitImageConfig::from_timm(ok, "config.json");
  EXPECT_EQ(c.resize_size(), 235);     // floor(224 / 0.95)
  EXPECT_EQ(c.image_mean[0], 0.485f);  // timm's ImageNet defaults when absent
  auto fails_with = [](json j, const std::string& what) {
    try {
      VitImageConfig::from_timm(j, "x/config.json: pretrained_cfg");
    } catch (const Error& e) {
      const std::string m = e.what();
      return m.find("x/config.json") != std::string::npos && m.find(what) != std::string::npos;
    }
    return false;
  };
  json bad = ok;
  bad["crop_mode"] = "border";
  EXPECT_TRUE(fails_with(bad, "crop_mode 'border'"));
  bad = ok;
  bad["input_size"] = {3, 224, 192};
  EXPECT_TRUE(fails_with(bad, "input_size"));
  bad = ok;
  bad["interpolation"] = "random";
  EXPECT_TRUE(fails_with(bad, "interpolation"));
  bad = ok;
  bad["crop_pct"] = 1.5;
  EXPECT_TRUE(fails_with(bad, "crop_pct"));
  bad = ok;
  bad.erase("input_size");
  EXPECT_TRUE(fails_with(bad, "input_size"));
}
