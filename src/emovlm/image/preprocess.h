// Model input preparation exactly as the reference processors do it: Qwen2-VL (smart_resize,
// bicubic, rescale, CLIP normalisation, 14x14 patches in 2x2 merge order) and the teachers
// (Resize(shorter side) + CenterCrop, or the HF processor's direct resize, with timm's crop_pct;
// Normalize(mean, std)).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/core/float_array.h"
#include "emovlm/image/image.h"
#include "emovlm/image/resample.h"

namespace emovlm {

// ------------------------------------------------------------------------------- Qwen2-VL

struct Qwen2VLImageConfig {
  int patch_size = 14;
  int temporal_patch_size = 2;
  int merge_size = 2;
  int64_t min_pixels = 3136;
  int64_t max_pixels = 12845056;
  std::array<float, 3> image_mean{0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> image_std{0.26862954f, 0.26130258f, 0.27577711f};
  double rescale_factor = 1.0 / 255.0;
  Filter resample = Filter::Bicubic;

  // preprocessor_config.json (min_pixels/max_pixels or size.shortest_edge/longest_edge).
  static Qwen2VLImageConfig from_json(const nlohmann::json& j, const std::string& where);
  // DIR/preprocessor_config.json when present, else the defaults.
  static Qwen2VLImageConfig from_dir(const std::string& dir);
  void validate() const;
  int factor() const { return patch_size * merge_size; }
};

// The (height, width) the Qwen2-VL processor resizes to: multiples of `factor`, pixel count
// within [min_pixels, max_pixels], aspect kept (Python's round-half-to-even included).
std::pair<int, int> smart_resize(int height, int width, int factor, int64_t min_pixels,
                                 int64_t max_pixels);

struct Qwen2VLPixels {
  FloatArray pixel_values;            // [grid_t * grid_h * grid_w, 3 * temporal * patch * patch]
  std::array<int64_t, 3> grid_thw{};  // (t, h, w) in patches
  int resized_width = 0, resized_height = 0;
  int64_t num_tokens(int merge_size) const {
    return grid_thw[0] * grid_thw[1] * grid_thw[2] / (merge_size * merge_size);
  }
};

Qwen2VLPixels preprocess_qwen2vl(const RgbImage& image, const Qwen2VLImageConfig& config);

// ----------------------------------------------------------- ViT, ResNet, VGG (the teachers)

enum class VitResizeMode {
  // the shorter side to floor(size / crop_pct), then CenterCrop(size): torchvision Resize(int) +
  // CenterCrop, the reference teacher's (crop_pct 1) and timm's crop_mode "center"
  ResizeCenterCrop,
  // both sides to floor(size / crop_pct), then CenterCrop(size): the HF ViT processor (crop_pct 1)
  // and timm's crop_mode "squash"
  Direct,
};

// The evaluation input of an image classifier (the ViT teacher, ResNet, VGG).
struct VitImageConfig {
  int image_size = 384;
  std::array<float, 3> image_mean{0.5f, 0.5f, 0.5f};
  std::array<float, 3> image_std{0.5f, 0.5f, 0.5f};
  Filter resample = Filter::Bilinear;
  VitResizeMode mode = VitResizeMode::ResizeCenterCrop;
  double crop_pct = 1.0;  // the image is resized to floor(image_size / crop_pct) before the crop

  // preprocessor_config.json of a ViT checkpoint (size, image_mean, image_std, resample).
  static VitImageConfig from_json(const nlohmann::json& j, const std::string& where);
  static VitImageConfig from_dir(const std::string& dir);
  // timm's pretrained_cfg (config.json): input_size, interpolation, crop_pct, crop_mode (center or
  // squash), mean, std.
  static VitImageConfig from_timm(const nlohmann::json& pretrained_cfg, const std::string& where);
  // Those fields of a pretrained_cfg.
  nlohmann::json to_timm() const;
  void validate() const;
  int resize_size() const;  // floor(image_size / crop_pct), as timm computes it
};

// The resized + cropped uint8 image the classifier sees (before normalisation).
RgbImage vit_geometry(const RgbImage& image, const VitImageConfig& config);
// [3, size, size] float32, normalised.
FloatArray preprocess_vit(const RgbImage& image, const VitImageConfig& config);
// Normalises an already sized image into dst ([3, H, W], CHW).
void normalize_chw(const RgbImage& image, const std::array<float, 3>& mean,
                   const std::array<float, 3>& std, double rescale, float* dst);

}  // namespace emovlm
