// Qwen2-VL configuration parsing (flat and nested layouts).
#include "emovlm/models/qwen2vl_config.h"

#include <cmath>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"

namespace emovlm {

// Upper bounds well above every published model (Qwen2-VL-72B: hidden 8192, intermediate 29568,
// vocabulary 152064, 80 layers) that keep a corrupt config from asking for terabytes.
constexpr int64_t kMaxWidth = int64_t{1} << 20;
constexpr int64_t kMaxVocab = int64_t{1} << 22;
constexpr int64_t kMaxLayers = 4096;

void Qwen2VLVisionConfig::validate() const {
  check_range(depth, 1, kMaxLayers, "vision_config.depth");
  check_range(embed_dim, 1, kMaxWidth, "vision_config.embed_dim");
  check_range(num_heads, 1, kMaxWidth, "vision_config.num_heads");
  check_range(in_chans, 1, 16, "vision_config.in_chans");
  check_range(hidden_size, 1, kMaxWidth, "vision_config.hidden_size");
  check_range(patch_size, 1, 1024, "vision_config.patch_size");
  check_range(spatial_merge_size, 1, 64, "vision_config.spatial_merge_size");
  check_range(temporal_patch_size, 1, 64, "vision_config.temporal_patch_size");
  check_positive_finite(mlp_ratio, 64, "vision_config.mlp_ratio");
  check_range(mlp_dim(), 1, kMaxWidth, "vision_config.embed_dim * mlp_ratio");
  check_positive_finite(layer_norm_eps, 1, "vision_config.layer_norm_eps");
  check(depth > 0 && embed_dim > 0 && num_heads > 0 && embed_dim % num_heads == 0,
        cat("vision_config: embed_dim ", embed_dim, " must be a positive multiple of num_heads ",
            num_heads));
  check(head_dim() % 4 == 0,
        cat("vision_config: head dim ", head_dim(), " must be a multiple of 4 (2-D rotary)"));
  check(patch_size > 0 && spatial_merge_size > 0 && temporal_patch_size > 0 && hidden_size > 0,
        "vision_config: patch_size, spatial_merge_size, temporal_patch_size and hidden_size must "
        "be positive");
}

void Qwen2VLTextConfig::validate() const {
  check_range(vocab_size, 1, kMaxVocab, "vocab_size");
  check_range(hidden_size, 1, kMaxWidth, "hidden_size");
  check_range(intermediate_size, 1, kMaxWidth, "intermediate_size");
  check_range(num_hidden_layers, 1, kMaxLayers, "num_hidden_layers");
  check_range(num_attention_heads, 1, kMaxWidth, "num_attention_heads");
  check_range(num_key_value_heads, 1, kMaxWidth, "num_key_value_heads");
  for (int k = 0; k < 3; ++k)
    check_range(mrope_section[k], 0, kMaxWidth, cat("mrope_section[", k, "]"));
  check_positive_finite(rms_norm_eps, 1, "rms_norm_eps");
  check_positive_finite(rope_theta, 1e12, "rope_theta");
  check(hidden_size > 0 && num_attention_heads > 0 && hidden_size % num_attention_heads == 0,
        cat("text config: hidden_size ", hidden_size,
            " must be a positive multiple of num_attention_heads ", num_attention_heads));
  check(num_key_value_heads > 0 && num_attention_heads % num_key_value_heads == 0,
        cat("text config: num_attention_heads ", num_attention_heads,
            " must be a multiple of num_key_value_heads ", num_key_value_heads));
  check(mrope_section[0] + mrope_section[1] + mrope_section[2] == head_dim() / 2,
        cat("text config: mrope_section [", mrope_section[0], ", ", mrope_section[1], ", ",
            mrope_section[2], "] must sum to head_dim/2 = ", head_dim() / 2));
  check(vocab_size > 0 && num_hidden_layers > 0 && intermediate_size > 0,
        "text config: sizes must be positive");
}

void Qwen2VLConfig::validate() const {
  vision.validate();
  text.validate();
  check(vision.hidden_size == text.hidden_size,
        cat("vision_config.hidden_size ", vision.hidden_size, " differs from the language model's ",
            text.hidden_size));
  for (int64_t id : {image_token_id, vision_start_token_id, vision_end_token_id})
    check(id >= 0 && id < text.vocab_size,
          cat("special token id ", id, " is outside the vocabulary (", text.vocab_size, ")"));
}

Qwen2VLConfig Qwen2VLConfig::from_json(const json& j, const std::string& where) {
  Qwen2VLConfig c;
  // text: the nested text_config when present, else the top level
  const json& t = j.contains("text_config") && j["text_config"].is_object() ? j["text_config"] : j;
  const std::string tw = &t == &j ? where : where + ": text_config";
  auto& x = c.text;
  x.vocab_size = json_optional<int64_t>(
      t, "vocab_size", json_optional<int64_t>(j, "vocab_size", x.vocab_size, where), tw);
  x.hidden_size = json_required<int64_t>(t, "hidden_size", tw);
  x.intermediate_size = json_required<int64_t>(t, "intermediate_size", tw);
  x.num_hidden_layers = json_required<int64_t>(t, "num_hidden_layers", tw);
  x.num_attention_heads = json_required<int64_t>(t, "num_attention_heads", tw);
  x.num_key_value_heads =
      json_optional<int64_t>(t, "num_key_value_heads", x.num_attention_heads, tw);
  x.rms_norm_eps = json_optional<double>(t, "rms_norm_eps", x.rms_norm_eps, tw);
  x.hidden_act = json_optional<std::string>(t, "hidden_act", x.hidden_act, tw);
  x.tie_word_embeddings = json_optional<bool>(
      j, "tie_word_embeddings", json_optional<bool>(t, "tie_word_embeddings", false, tw), where);
  x.rope_theta = json_optional<double>(t, "rope_theta", x.rope_theta, tw);
  // rope: rope_scaling (flat) or rope_parameters (transformers 5)
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    for (const json* src : {&t, &j}) {
      if (src->contains(key) && (*src)[key].is_object()) {
        const json& r = (*src)[key];
        if (r.contains("mrope_section")) {
          auto v = r["mrope_section"].get<std::vector<int64_t>>();
          if (v.size() != 3)
            throw Error(cat(where, ": ", key, ".mrope_section must have 3 entries"));
          x.mrope_section = {v[0], v[1], v[2]};
        }
        x.rope_theta = json_optional<double>(r, "rope_theta", x.rope_theta, where + ": " + key);
      }
    }
  }
  // vision
  if (!j.contains("vision_config") || !j["vision_config"].is_object())
    throw Error(cat(where, ": missing 'vision_config' object"));
  const json& v = j["vision_config"];
  const std::string vw = where + ": vision_config";
  auto& y = c.vision;
  y.depth = json_optional<int64_t>(v, "depth", y.depth, vw);
  y.embed_dim = json_optional<int64_t>(v, "embed_dim", y.embed_dim, vw);
  y.num_heads = json_optional<int64_t>(v, "num_heads", y.num_heads, vw);
  y.mlp_ratio = json_optional<double>(v, "mlp_ratio", y.mlp_ratio, vw);
  y.in_chans = json_optional<int64_t>(v, "in_chans",
                                      json_optional<int64_t>(v, "in_channels", y.in_chans, vw), vw);
  y.hidden_size = json_optional<int64_t>(v, "hidden_size", x.hidden_size, vw);
  y.patch_size = json_optional<int64_t>(
      v, "patch_size", json_optional<int64_t>(v, "spatial_patch_size", y.patch_size, vw), vw);
  y.spatial_merge_size = json_optional<int64_t>(v, "spatial_merge_size", y.spatial_merge_size, vw);
  y.temporal_patch_size =
      json_optional<int64_t>(v, "temporal_patch_size", y.temporal_patch_size, vw);
  y.hidden_act = json_optional<std::string>(v, "hidden_act", y.hidden_act, vw);
  // token ids (top level; some exports put them in text_config)
  auto tok = [&](const char* key, int64_t def) {
    return json_optional<int64_t>(j, key, json_optional<int64_t>(t, key, def, tw), where);
  };
  c.image_token_id = tok("image_token_id", c.image_token_id);
  c.video_token_id = tok("video_token_id", c.video_token_id);
  c.vision_start_token_id = tok("vision_start_token_id", c.vision_start_token_id);
  c.vision_end_token_id = tok("vision_end_token_id", c.vision_end_token_id);
  c.bos_token_id = tok("bos_token_id", c.bos_token_id);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_number_integer())
    c.eos_token_id = j["eos_token_id"].get<int64_t>();
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(cat(where, ": ", e.what()));
  }
  return c;
}

Qwen2VLConfig Qwen2VLConfig::from_dir(const std::string& dir) {
  std::string p = (std::filesystem::path(dir) / "config.json").string();
  return from_json(read_json_file(p), p);
}

json Qwen2VLConfig::to_json() const {
  json j;
  j["architectures"] = {"Qwen2VLForConditionalGeneration"};
  j["model_type"] = "qwen2_vl";
  j["vocab_size"] = text.vocab_size;
  j["hidden_size"] = text.hidden_size;
  j["intermediate_size"] = text.intermediate_size;
  j["num_hidden_layers"] = text.num_hidden_layers;
  j["num_attention_heads"] = text.num_attention_heads;
  j["num_key_value_heads"] = text.num_key_value_heads;
  j["rms_norm_eps"] = text.rms_norm_eps;
  j["rope_theta"] = text.rope_theta;
  j["hidden_act"] = text.hidden_act;
  j["tie_word_embeddings"] = text.tie_word_embeddings;
  j["rope_scaling"] = {{"type", "mrope"}, {"mrope_section", text.mrope_section}};
  j["image_token_id"] = image_token_id;
  j["video_token_id"] = video_token_id;
  j["vision_start_token_id"] = vision_start_token_id;
  j["vision_end_token_id"] = vision_end_token_id;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["torch_dtype"] = "bfloat16";
  j["vision_config"] = {{"depth", vision.depth},
                        {"embed_dim", vision.embed_dim},
                        {"num_heads", vision.num_heads},
                        // an int when whole: transformers 5 validates the field's type
                        {"mlp_ratio", vision.mlp_ratio == std::floor(vision.mlp_ratio)
                                          ? json(static_cast<int64_t>(vision.mlp_ratio))
                                          : json(vision.mlp_ratio)},
                        {"in_chans", vision.in_chans},
                        {"hidden_size", vision.hidden_size},
                        {"patch_size", vision.patch_size},
                        {"spatial_patch_size", vision.patch_size},
                        {"spatial_merge_size", vision.spatial_merge_size},
                        {"temporal_patch_size", vision.temporal_patch_size},
                        {"hidden_act", vision.hidden_act}};
  return j;
}

Qwen2VLConfig Qwen2VLConfig::qwen2vl_2b() {
  Qwen2VLConfig c;
  c.text.vocab_size = 151936;
  c.text.hidden_size = 1536;
  c.text.intermediate_size = 8960;
  c.text.num_hidden_layers = 28;
  c.text.num_attention_heads = 12;
  c.text.num_key_value_heads = 2;
  c.text.tie_word_embeddings = true;
  c.text.mrope_section = {16, 24, 24};
  c.vision.hidden_size = 1536;
  return c;
}

Qwen2VLConfig Qwen2VLConfig::qwen2vl_7b() {
  Qwen2VLConfig c;  // the defaults are the 7B shapes
  return c;
}

}  // namespace emovlm
