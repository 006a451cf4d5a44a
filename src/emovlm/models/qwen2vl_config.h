// Qwen2-VL configuration: config.json in the flat Hub layout (rope_scaling.mrope_section,
// vision_config.embed_dim) and in the nested layout transformers 5 writes (text_config,
// rope_parameters).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace emovlm {

struct Qwen2VLVisionConfig {
  int64_t depth = 32;
  int64_t embed_dim = 1280;
  int64_t num_heads = 16;
  double mlp_ratio = 4.0;
  int64_t in_chans = 3;
  int64_t hidden_size = 3584;  // output size of the merger = the language model's hidden size
  int64_t patch_size = 14;
  int64_t spatial_merge_size = 2;
  int64_t temporal_patch_size = 2;
  std::string hidden_act = "quick_gelu";
  double layer_norm_eps = 1e-6;

  int64_t head_dim() const { return embed_dim / num_heads; }
  int64_t mlp_dim() const { return static_cast<int64_t>(embed_dim * mlp_ratio); }
  int64_t patch_dim() const { return in_chans * temporal_patch_size * patch_size * patch_size; }
  void validate() const;
};

struct Qwen2VLTextConfig {
  int64_t vocab_size = 152064;
  int64_t hidden_size = 3584;
  int64_t intermediate_size = 18944;
  int64_t num_hidden_layers = 28;
  int64_t num_attention_heads = 28;
  int64_t num_key_value_heads = 4;
  double rms_norm_eps = 1e-6;
  double rope_theta = 1000000.0;
  std::array<int64_t, 3> mrope_section{16, 24, 24};
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  void validate() const;
};

struct Qwen2VLConfig {
  Qwen2VLVisionConfig vision;
  Qwen2VLTextConfig text;
  int64_t image_token_id = 151655;
  int64_t video_token_id = 151656;
  int64_t vision_start_token_id = 151652;
  int64_t vision_end_token_id = 151653;
  int64_t bos_token_id = 151643;
  int64_t eos_token_id = 151645;

  static Qwen2VLConfig from_json(const nlohmann::json& j, const std::string& where);
  static Qwen2VLConfig from_dir(const std::string& dir);  // DIR/config.json
  nlohmann::json to_json() const;                         // the flat Hub layout
  void validate() const;

  // The published shapes (for benchmarks with random weights; no download is possible here).
  static Qwen2VLConfig qwen2vl_2b();
  static Qwen2VLConfig qwen2vl_7b();
};

}  // namespace emovlm
