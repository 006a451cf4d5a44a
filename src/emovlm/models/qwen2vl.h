// Qwen2-VL for conditional generation: vision tower + language model + lm_head, M-RoPE position
// ids with the reference's semantics, and loading of published checkpoint directories.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "emovlm/models/qwen2vl_config.h"
#include "emovlm/models/qwen2vl_text.h"
#include "emovlm/models/qwen2vl_vision.h"

namespace emovlm {

struct Qwen2VLInputs {
  torch::Tensor input_ids;       // [B, T] int64, image pads already expanded
  torch::Tensor attention_mask;  // [B, T] (1 = token, 0 = padding); undefined = all tokens
  torch::Tensor pixel_values;    // [N, patch_dim]: every image's patches, in order of appearance
  std::vector<GridTHW> grids;    // (t, h, w) of each image, in order of appearance
};

struct Qwen2VLOutput {
  torch::Tensor logits;        // [B, T, vocab] (or [B, 1, vocab] for the last position only)
  torch::Tensor position_ids;  // [3, B, T]
  torch::Tensor rope_deltas;   // [B]: position of the next token = cache length + delta
  torch::Tensor
      image_features;  // [sum of visual tokens, hidden]: the merger's output, images in order
};

class Qwen2VLImpl : public torch::nn::Module {
 public:
  explicit Qwen2VLImpl(const Qwen2VLConfig& config);

  // A checkpoint directory as published (config.json + model.safetensors or a sharded index;
  // Hub or transformers-5 key names; F32/F16/BF16 on disk; lm_head absent = tied embeddings).
  // `weights` overrides the weight file (e.g. model-bf16.safetensors).
  static std::shared_ptr<Qwen2VLImpl> from_pretrained(const std::string& dir,
                                                      torch::ScalarType dtype,
                                                      torch::Device device = torch::kCPU,
                                                      const std::string& weights = "");
  // The same with a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) merged
  // into the weights; no adapter when `adapter` is empty. The merge runs in float32 on the CPU
  // before the cast and the move, so the adapter costs nothing at inference.
  static std::shared_ptr<Qwen2VLImpl> from_pretrained(const std::string& dir,
                                                      const std::string& adapter,
                                                      torch::ScalarType dtype,
                                                      torch::Device device);
  // Writes a checkpoint directory that from_pretrained reads: config.json, model.safetensors
  // (Hub names; lm_head left out when tied) and, from `assets_dir` when given, the tokenizer,
  // processor and generation files.
  void save_pretrained(const std::string& dir, const std::string& assets_dir = "") const;

  // Position ids [3, B, T] (int64) and rope deltas [B], as the reference's get_rope_index:
  // text advances by one, image tokens take (t, h, w) grid positions, text after an image
  // resumes at max + 1; padding gets position 1.
  std::pair<torch::Tensor, torch::Tensor> rope_index(const torch::Tensor& input_ids,
                                                     const torch::Tensor& attention_mask,
                                                     const std::vector<GridTHW>& grids) const;

  // Token embeddings with the vision features in place of the image pad tokens; the features
  // themselves (merger output) go to image_features when given.
  torch::Tensor embed(const Qwen2VLInputs& inputs, torch::Tensor* image_features = nullptr);

  // Prefill: the whole prompt. With a cache, keys/values are kept for decoding.
  // last_only: logits of the last position only (generation).
  Qwen2VLOutput forward(const Qwen2VLInputs& inputs, KVCache* cache = nullptr,
                        bool last_only = false);

  // One decoding step for the whole batch: ids [B, 1] at positions cache.length + rope_deltas;
  // key_mask [B, cache.length + 1] (1 = attend). Returns logits [B, vocab].
  torch::Tensor decode(const torch::Tensor& ids, const torch::Tensor& rope_deltas,
                       const torch::Tensor& key_mask, KVCache& cache);

  // Continues a cached prefix with ids [B, T] (no images): positions cache.length + delta + i.
  // Returns logits [B, T, vocab].
  torch::Tensor extend(const torch::Tensor& ids, const torch::Tensor& rope_deltas,
                       const torch::Tensor& key_mask, KVCache& cache);

  // Module::to(device, dtype) that keeps lm_head on the embeddings' storage when the two share it
  // (tied checkpoints; to() alone would move them as two tensors and keep both).
  void move_to(torch::Device device, torch::ScalarType dtype);

  const Qwen2VLConfig& config() const { return cfg_; }
  torch::ScalarType dtype() const { return lm_head->weight.scalar_type(); }
  torch::Device device() const { return lm_head->weight.device(); }

  Qwen2VLVisionModel visual{nullptr};
  Qwen2VLTextModel model{nullptr};
  Linear lm_head{nullptr};

 private:
  Qwen2VLConfig cfg_;
};
TORCH_MODULE(Qwen2VL);

// bool [B, 1, T, past + T]: query i (at absolute past + i) sees key j when key_mask[b, j] and
// j <= past + i; every query sees itself, so padded rows stay finite.
torch::Tensor causal_mask(const torch::Tensor& key_mask, int64_t t, int64_t past);

}  // namespace emovlm
