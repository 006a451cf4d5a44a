// `emovlm preprocess IMAGE --for qwen2vl|vit|timm`: the model input an image becomes, as the
// reference makes it.
#include <cmath>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/image/preprocess.h"

namespace emovlm::cli {

namespace {

struct PreprocessArgs {
  std::string image, target = "qwen2vl", config_dir, out, vit_mode = "resize-crop";
  int size = 0;
  int64_t min_pixels = 0, max_pixels = 0, max_image_pixels = DecodeOptions{}.max_pixels;
};

void print_stats(const FloatArray& a) {
  double sum = 0, sq = 0;
  float lo = INFINITY, hi = -INFINITY;
  for (float v : a.data) sum += v, sq += double(v) * v, lo = std::min(lo, v), hi = std::max(hi, v);
  const double n = static_cast<double>(a.data.size());
  const double mean = sum / n;
  std::printf("pixel_values %s float32: mean %.6f std %.6f min %.6f max %.6f\n",
              shape_str(a.shape).c_str(), mean, std::sqrt(std::max(0.0, sq / n - mean * mean)), lo,
              hi);
}

void run_preprocess(const PreprocessArgs& a) {
  DecodeOptions dopt;
  dopt.max_pixels = a.max_image_pixels;
  RgbImage img = decode_image_file(a.image, dopt);
  std::printf("%s: %dx%d RGB\n", a.image.c_str(), img.width, img.height);
  FloatArray pv;
  std::vector<TensorView> views;
  int64_t grid[3] = {0, 0, 0};
  if (a.target == "qwen2vl") {
    Qwen2VLImageConfig cfg =
        a.config_dir.empty() ? Qwen2VLImageConfig{} : Qwen2VLImageConfig::from_dir(a.config_dir);
    if (a.min_pixels > 0) cfg.min_pixels = a.min_pixels;
    if (a.max_pixels > 0) cfg.max_pixels = a.max_pixels;
    cfg.validate();
    Qwen2VLPixels px = preprocess_qwen2vl(img, cfg);
    std::printf(
        "resized to %dx%d, grid_thw (%lld, %lld, %lld), %lld visual tokens after the %dx%d merge\n",
        px.resized_width, px.resized_height, static_cast<long long>(px.grid_thw[0]),
        static_cast<long long>(px.grid_thw[1]), static_cast<long long>(px.grid_thw[2]),
        static_cast<long long>(px.num_tokens(cfg.merge_size)), cfg.merge_size, cfg.merge_size);
    pv = std::move(px.pixel_values);
    for (int i = 0; i < 3; ++i) grid[i] = px.grid_thw[i];
  } else if (a.target == "vit") {
    VitImageConfig cfg =
        a.config_dir.empty() ? VitImageConfig{} : VitImageConfig::from_dir(a.config_dir);
    if (a.size > 0) cfg.image_size = a.size;
    if (a.vit_mode == "direct")
      cfg.mode = VitResizeMode::Direct;
    else if (a.vit_mode != "resize-crop")
      throw Error(cat("--vit-mode must be resize-crop or direct, not '", a.vit_mode, "'"));
    cfg.validate();
    pv = preprocess_vit(img, cfg);
  } else if (a.target == "timm") {
    // a ResNet or VGG checkpoint's eval transform (config.json's pretrained_cfg)
    if (a.config_dir.empty())
      throw Error("--for timm needs --config DIR (a timm checkpoint directory)");
    const std::string p = a.config_dir + "/config.json";
    const json j = read_json_file(p);
    VitImageConfig cfg = VitImageConfig::from_timm(j.value("pretrained_cfg", json::object()),
                                                   p + ": pretrained_cfg");
    if (a.size > 0) cfg.image_size = a.size;
    cfg.validate();
    pv = preprocess_vit(img, cfg);
  } else {
    throw Error(cat("--for must be qwen2vl, vit or timm, not '", a.target, "'"));
  }
  print_stats(pv);
  if (!a.out.empty()) {
    TensorView t;
    t.name = "pixel_values";
    t.dtype = DType::F32;
    t.shape = pv.shape;
    t.data = reinterpret_cast<const uint8_t*>(pv.data.data());
    t.nbytes = pv.data.size() * sizeof(float);
    views.push_back(t);
    if (a.target == "qwen2vl") {
      TensorView g;
      g.name = "grid_thw";
      g.dtype = DType::I64;
      g.shape = {1, 3};
      g.data = reinterpret_cast<const uint8_t*>(grid);
      g.nbytes = sizeof grid;
      views.push_back(g);
    }
    save_safetensors(a.out, views, {{"image", a.image}, {"for", a.target}});
    std::printf("wrote %s\n", a.out.c_str());
  }
}

}  // namespace

void add_preprocess_command(CLI::App& app) {
  auto a = std::make_shared<PreprocessArgs>();
  CLI::App* cmd = app.add_subcommand(
      "preprocess", "Turn an image into a model input exactly as the reference does");
  cmd->add_option("image", a->image, "an image file (JPEG, PNG, GIF, BMP, WebP)")->required();
  cmd->add_option("--for", a->target,
                  "qwen2vl, vit or timm (a ResNet/VGG checkpoint's pretrained_cfg)")
      ->capture_default_str()
      ->check(CLI::IsMember({"qwen2vl", "vit", "timm"}));
  cmd->add_option("--config", a->config_dir,
                  "a checkpoint folder whose preprocessor_config.json (timm: config.json) to use "
                  "(default: the processor's defaults; timm: required)")
      ->group(kModelsGroup);
  add_out_flag(cmd, a->out,
               "write pixel_values (and grid_thw) to this .safetensors file (default: print a "
               "summary only)",
               false);
  cmd->add_option("--size", a->size, "ViT input size (default: the config's, else 384)");
  cmd->add_option("--vit-mode", a->vit_mode,
                  "resize-crop (reference teacher) or direct (HF ViT processor)")
      ->capture_default_str()
      ->check(CLI::IsMember({"resize-crop", "direct"}));
  cmd->add_option("--min-pixels", a->min_pixels, "Qwen2-VL min_pixels (default: the config's)");
  cmd->add_option("--max-pixels", a->max_pixels, "Qwen2-VL max_pixels (default: the config's)");
  cmd->add_option("--max-image-pixels", a->max_image_pixels, "refuse larger images (0: no limit)")
      ->capture_default_str();
  cmd->callback([a] { run_preprocess(*a); });
}

}  // namespace emovlm::cli
