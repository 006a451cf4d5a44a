// Qwen2-VL and ViT preprocessing.
#include "emovlm/image/preprocess.h"

#include <cfenv>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"

namespace emovlm {

namespace {

// Python's round(): half to even.
int64_t py_round(double x) {
  double r = std::nearbyint(x);  // default rounding mode is to-nearest-even
  return static_cast<int64_t>(r);
}

std::array<float, 3> read_triple(const json& j, const std::string& key,
                                 const std::array<float, 3>& fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (it->is_number()) {
    float v = it->get<float>();
    return {v, v, v};
  }
  if (!it->is_array() || it->size() != 3)
    throw Error(cat(where, ": '", key, "' must be a list of 3 numbers"));
  return {(*it)[0].get<float>(), (*it)[1].get<float>(), (*it)[2].get<float>()};
}

}  // namespace

void normalize_chw(const RgbImage& image, const std::array<float, 3>& mean,
                   const std::array<float, 3>& std, double rescale, float* dst) {
  const size_t plane = static_cast<size_t>(image.width) * image.height;
  for (int c = 0; c < 3; ++c) {
    float* out = dst + c * plane;
    const uint8_t* src = image.pixels.data() + c;
    for (size_t i = 0; i < plane; ++i) {
      float v = static_cast<float>(src[3 * i] * rescale);  // rescale in double, stored as float32
      out[i] = (v - mean[c]) / std[c];
    }
  }
}

// ------------------------------------------------------------------------------- Qwen2-VL

Qwen2VLImageConfig Qwen2VLImageConfig::from_json(const json& j, const std::string& where) {
  Qwen2VLImageConfig c;
  c.patch_size = json_optional<int>(j, "patch_size", c.patch_size, where);
  c.temporal_patch_size =
      json_optional<int>(j, "temporal_patch_size", c.temporal_patch_size, where);
  c.merge_size = json_optional<int>(j, "merge_size", c.merge_size, where);
  if (j.contains("size") && j["size"].is_object()) {
    c.min_pixels =
        json_optional<int64_t>(j["size"], "shortest_edge", c.min_pixels, where + ": size");
    c.max_pixels =
        json_optional<int64_t>(j["size"], "longest_edge", c.max_pixels, where + ": size");
  }
  c.min_pixels = json_optional<int64_t>(j, "min_pixels", c.min_pixels, where);
  c.max_pixels = json_optional<int64_t>(j, "max_pixels", c.max_pixels, where);
  c.image_mean = read_triple(j, "image_mean", c.image_mean, where);
  c.image_std = read_triple(j, "image_std", c.image_std, where);
  c.rescale_factor = json_optional<double>(j, "rescale_factor", c.rescale_factor, where);
  if (j.contains("resample") && !j["resample"].is_null())
    c.resample = filter_from_pil(json_required<int>(j, "resample", where));
  c.validate();
  return c;
}

Qwen2VLImageConfig Qwen2VLImageConfig::from_dir(const std::string& dir) {
  std::string p = (std::filesystem::path(dir) / "preprocessor_config.json").string();
  if (!std::filesystem::exists(p)) return Qwen2VLImageConfig{};
  return from_json(read_json_file(p), p);
}

void Qwen2VLImageConfig::validate() const {
  check(patch_size > 0 && temporal_patch_size > 0 && merge_size > 0,
        cat("Qwen2-VL image config: patch_size, temporal_patch_size and merge_size must be "
            "positive (",
            patch_size, ", ", temporal_patch_size, ", ", merge_size, ")"));
  check(min_pixels > 0 && max_pixels >= min_pixels,
        cat("Qwen2-VL image config: need 0 < min_pixels <= max_pixels (", min_pixels, ", ",
            max_pixels, ")"));
  for (float s : image_std) check(s > 0, "Qwen2-VL image config: image_std must be positive");
}

std::pair<int, int> smart_resize(int height, int width, int factor, int64_t min_pixels,
                                 int64_t max_pixels) {
  if (height <= 0 || width <= 0)
    throw Error(cat("smart_resize: invalid image size ", width, "x", height));
  if (static_cast<double>(std::max(height, width)) / std::min(height, width) > 200)
    throw Error(cat("smart_resize: aspect ratio of ", width, "x", height, " is over 200"));
  int64_t h_bar = py_round(static_cast<double>(height) / factor) * factor;
  int64_t w_bar = py_round(static_cast<double>(width) / factor) * factor;
  if (h_bar * w_bar > max_pixels) {
    double beta = std::sqrt(static_cast<double>(height) * width / max_pixels);
    h_bar = std::max<int64_t>(factor,
                              static_cast<int64_t>(std::floor(height / beta / factor)) * factor);
    w_bar =
        std::max<int64_t>(factor, static_cast<int64_t>(std::floor(width / beta / factor)) * factor);
  } else if (h_bar * w_bar < min_pixels) {
    double beta =
        std::sqrt(static_cast<double>(min_pixels) / (static_cast<double>(height) * width));
    h_bar = static_cast<int64_t>(std::ceil(height * beta / factor)) * factor;
    w_bar = static_cast<int64_t>(std::ceil(width * beta / factor)) * factor;
  }
  return {static_cast<int>(h_bar), static_cast<int>(w_bar)};
}

Qwen2VLPixels preprocess_qwen2vl(const RgbImage& image, const Qwen2VLImageConfig& cfg) {
  if (image.empty()) throw Error("preprocess_qwen2vl: empty image");
  auto [rh, rw] =
      smart_resize(image.height, image.width, cfg.factor(), cfg.min_pixels, cfg.max_pixels);
  RgbImage resized = resize(image, rw, rh, cfg.resample);
  const int P = cfg.patch_size, T = cfg.temporal_patch_size, M = cfg.merge_size;
  const int64_t gh = rh / P, gw = rw / P;

  std::vector<float> chw(static_cast<size_t>(3) * rh * rw);
  normalize_chw(resized, cfg.image_mean, cfg.image_std, cfg.rescale_factor, chw.data());

  // One image is one frame, repeated to fill the temporal patch. Rows follow the merge order
  // (h/M, w/M, M, M); each row is [C][T][P][P]:
  // [T, C, gh/M, M, P, gw/M, M, P] -> [gh/M, gw/M, M, M, C, T, P, P] -> [gh*gw, C*T*P*P]
  Qwen2VLPixels out;
  const int64_t cols = 3LL * T * P * P;
  out.pixel_values.shape = {gh * gw, cols};
  out.pixel_values.data.resize(static_cast<size_t>(gh * gw * cols));
  float* dst = out.pixel_values.data.data();
  for (int64_t bh = 0; bh < gh / M; ++bh)
    for (int64_t bw = 0; bw < gw / M; ++bw)
      for (int mh = 0; mh < M; ++mh)
        for (int mw = 0; mw < M; ++mw) {
          const int64_t py = (bh * M + mh) * P, px = (bw * M + mw) * P;
          for (int c = 0; c < 3; ++c)
            for (int t = 0; t < T; ++t)
              for (int y = 0; y < P; ++y) {
                const float* src = chw.data() + (static_cast<size_t>(c) * rh + py + y) * rw + px;
                std::copy(src, src + P, dst);
                dst += P;
              }
        }
  out.grid_thw = {1, gh, gw};
  out.resized_height = rh;
  out.resized_width = rw;
  return out;
}

// -------------------------------------------------------------------------------------- ViT

VitImageConfig VitImageConfig::from_json(const json& j, const std::string& where) {
  VitImageConfig c;
  if (j.contains("size")) {
    const json& s = j["size"];
    if (s.is_number()) {
      c.image_size = json_required<int>(j, "size", where);
    } else if (s.is_object()) {
      int h = json_optional<int>(
          s, "height", json_optional<int>(s, "shortest_edge", c.image_size, where), where);
      int w = json_optional<int>(s, "width", h, where);
      if (h != w)
        throw Error(cat(where, ": only square ViT inputs are supported (size ", w, "x", h, ")"));
      c.image_size = h;
    }
  }
  c.image_mean = read_triple(j, "image_mean", c.image_mean, where);
  c.image_std = read_triple(j, "image_std", c.image_std, where);
  if (j.contains("resample") && !j["resample"].is_null())
    c.resample = filter_from_pil(json_required<int>(j, "resample", where));
  c.validate();
  return c;
}

VitImageConfig VitImageConfig::from_dir(const std::string& dir) {
  std::string p = (std::filesystem::path(dir) / "preprocessor_config.json").string();
  if (!std::filesystem::exists(p)) return VitImageConfig{};
  return from_json(read_json_file(p), p);
}

VitImageConfig VitImageConfig::from_timm(const json& j, const std::string& where) {
  if (!j.is_object()) throw Error(cat(where, ": pretrained_cfg must be an object"));
  VitImageConfig c;
  const auto size = json_required<std::vector<int>>(j, "input_size", where);
  if (size.size() != 3 || size[0] != 3 || size[1] != size[2])
    throw Error(
        cat(where, ": input_size must be [3, S, S] (square RGB inputs), not ", json(size).dump()));
  c.image_size = size[1];
  try {
    c.resample =
        filter_from_name(json_optional<std::string>(j, "interpolation", "bilinear", where));
  } catch (const Error& e) {
    throw Error(cat(where, ": interpolation: ", e.what()));
  }
  c.crop_pct = json_optional<double>(j, "crop_pct", 0.875, where);  // timm's DEFAULT_CROP_PCT
  const std::string crop_mode = json_optional<std::string>(j, "crop_mode", "center", where);
  if (crop_mode == "center")
    c.mode = VitResizeMode::ResizeCenterCrop;
  else if (crop_mode == "squash")
    c.mode = VitResizeMode::Direct;
  else
    throw Error(cat(where, ": crop_mode '", crop_mode, "' is not supported (center or squash)"));
  c.image_mean = read_triple(j, "mean", {0.485f, 0.456f, 0.406f}, where);
  c.image_std = read_triple(j, "std", {0.229f, 0.224f, 0.225f}, where);
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(cat(where, ": ", e.what()));
  }
  return c;
}

json VitImageConfig::to_timm() const {
  // the float32 values as the short decimals they came from (0.485, not 0.48500001430511475)
  auto decimals = [](const std::array<float, 3>& v) {
    json a = json::array();
    for (float x : v) {
      char b[32];
      std::snprintf(b, sizeof b, "%.7g", x);
      a.push_back(std::stod(b));
    }
    return a;
  };
  return {{"input_size", {3, image_size, image_size}},
          {"interpolation", filter_name(resample)},
          {"crop_pct", crop_pct},
          {"crop_mode", mode == VitResizeMode::Direct ? "squash" : "center"},
          {"mean", decimals(image_mean)},
          {"std", decimals(image_std)}};
}

void VitImageConfig::validate() const {
  check(image_size > 0, cat("image config: the input size must be positive (", image_size, ")"));
  check(crop_pct > 0 && crop_pct <= 1,
        cat("image config: crop_pct must be in (0, 1], not ", crop_pct));
  for (float s : image_std) check(s > 0, "image config: the std must be positive");
}

int VitImageConfig::resize_size() const {
  return static_cast<int>(std::floor(image_size / crop_pct));
}

RgbImage vit_geometry(const RgbImage& image, const VitImageConfig& cfg) {
  if (image.empty()) throw Error("preprocess_vit: empty image");
  const int S = cfg.image_size, R = cfg.resize_size();
  int nw = R, nh = R;
  if (cfg.mode == VitResizeMode::ResizeCenterCrop) {
    // torchvision Resize(R): the shorter side becomes R, the longer int(R * long / short).
    const int w = image.width, h = image.height;
    const int shorter = std::min(w, h), longer = std::max(w, h);
    const int new_long =
        static_cast<int>(static_cast<double>(static_cast<int64_t>(R) * longer) / shorter);
    nw = w <= h ? R : new_long, nh = w <= h ? new_long : R;
  }
  RgbImage resized = resize(image, nw, nh, cfg.resample);
  if (nw == S && nh == S) return resized;
  // torchvision CenterCrop(S): offsets int(round((dim - S) / 2)).
  const int top = static_cast<int>(py_round((nh - S) / 2.0)),
            left = static_cast<int>(py_round((nw - S) / 2.0));
  return crop(resized, left, top, S, S);
}

FloatArray preprocess_vit(const RgbImage& image, const VitImageConfig& cfg) {
  RgbImage sized = vit_geometry(image, cfg);
  FloatArray out;
  out.shape = {3, cfg.image_size, cfg.image_size};
  out.data.resize(static_cast<size_t>(3) * cfg.image_size * cfg.image_size);
  normalize_chw(sized, cfg.image_mean, cfg.image_std, 1.0 / 255.0, out.data.data());
  return out;
}

}  // namespace emovlm
