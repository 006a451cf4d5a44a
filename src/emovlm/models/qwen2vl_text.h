// The Qwen2 language model inside Qwen2-VL: RMSNorm, grouped-query attention with M-RoPE
// (rotary sections over temporal/height/width positions), SwiGLU MLP, and a KV cache.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "emovlm/models/layers.h"
#include "emovlm/models/qwen2vl_config.h"

namespace emovlm {

// Keys and values of every layer: [B, kv_heads, capacity, head_dim], the first `length` valid.
//
// Fixed mode (fixed(), for decoding steps that a CUDA graph replays): the buffers never grow and
// the write position lives on the device (`slot`), so a step has the same shapes and reads no
// host value: append writes one position at `slot` and returns the whole buffers (the caller's
// mask hides the positions not written yet), commit advances `slot` on the device.
struct KVCache {
  std::vector<torch::Tensor> k, v;
  int64_t length = 0;
  torch::Tensor slot;  // fixed mode: int64 [1] on the cache's device (the next write position)

  // Appends [B, kvh, T, hd] for `layer` and returns the valid keys/values including them
  // (fixed mode: T must be 1, and the whole buffers come back).
  std::pair<torch::Tensor, torch::Tensor> append(size_t layer, const torch::Tensor& k_new,
                                                 const torch::Tensor& v_new);
  // Call once per forward, after every layer appended: advances length (and slot) by T.
  void commit(int64_t t);
  // A fixed-mode copy of this cache with room for `capacity` positions in all.
  KVCache fixed(int64_t capacity) const;
  bool is_fixed() const { return slot.defined(); }
  // Keeps the given batch rows.
  void select(const torch::Tensor& rows);
  bool empty() const { return k.empty(); }
};

class TextAttentionImpl : public torch::nn::Module {
 public:
  explicit TextAttentionImpl(const Qwen2VLTextConfig& c);
  // x [B, T, D]; cos/sin [B, T, hd]; mask: bool [B, 1, T, T_total] (true = attend).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache, size_t layer);
  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(TextAttention);

class TextMlpImpl : public torch::nn::Module {
 public:
  explicit TextMlpImpl(const Qwen2VLTextConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  std::string act_;
};
TORCH_MODULE(TextMlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  explicit DecoderLayerImpl(const Qwen2VLTextConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KVCache* cache, size_t layer);
  TextAttention self_attn{nullptr};
  TextMlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

class Qwen2VLTextModelImpl : public torch::nn::Module {
 public:
  explicit Qwen2VLTextModelImpl(const Qwen2VLTextConfig& c);
  // inputs_embeds [B, T, D]; position_ids [3, B, T]; mask bool [B, 1, T, T_total].
  // Returns the final-norm hidden states [B, T, D]; fills/extends the cache when given.
  torch::Tensor forward(const torch::Tensor& inputs_embeds, const torch::Tensor& position_ids,
                        const torch::Tensor& mask, KVCache* cache);
  // The same with the rotary cos/sin [B, T, hd] already computed (rope()).
  torch::Tensor forward_rotary(const torch::Tensor& inputs_embeds, const torch::Tensor& cos,
                               const torch::Tensor& sin, const torch::Tensor& mask, KVCache* cache);
  // M-RoPE cos/sin [B, T, hd] in dtype from position_ids [3, B, T]. inv_freq: the rotary
  // frequencies on position_ids' device (a step that a CUDA graph captures cannot copy them
  // from the host); undefined = inv_freq(device).
  std::pair<torch::Tensor, torch::Tensor> rope(const torch::Tensor& position_ids,
                                               torch::ScalarType dtype,
                                               const torch::Tensor& inv_freq = {}) const;
  // 1 / theta^(2i / head_dim), float32 [head_dim / 2], computed on the CPU as the reference does.
  torch::Tensor inv_freq(torch::Device device) const;
  const Qwen2VLTextConfig& config() const { return cfg_; }

  // Training only (is_training(), gradients on, no cache): each decoder layer's activations are
  // recomputed in the backward pass instead of kept (gradient checkpointing).
  bool gradient_checkpointing = false;

  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};

 private:
  Qwen2VLTextConfig cfg_;
};
TORCH_MODULE(Qwen2VLTextModel);

}  // namespace emovlm
