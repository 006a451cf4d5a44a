// Generation for Qwen2-VL: the decoding settings (generation_config.json merged as the reference
// merges them), the next-token choice (repetition penalty, temperature, top-k, top-p), the prefill
// and the decoding loop over a KV cache.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "emovlm/models/qwen2vl.h"

namespace emovlm {

// Decoding settings. Fields left empty by the caller are taken from generation_config.json
// (the reference merges them the same way: Qwen2-VL-Instruct ships top_k=1, top_p=0.001,
// repetition_penalty=1.05, which makes its "sampling" greedy).
struct GenerationConfig {
  std::optional<int> max_new_tokens;
  std::optional<bool> do_sample;
  std::optional<double> temperature;
  std::optional<int> top_k;
  std::optional<double> top_p;
  std::optional<double> repetition_penalty;
  std::vector<int64_t> eos_token_ids;  // empty: from the file / the model config
  uint64_t seed = 0;
  // Decode with fixed shapes (FixedDecoder), replayed as one CUDA graph per token on a GPU where
  // the build has CUDA graphs; elsewhere the same fixed-shape steps run eagerly. Same tokens.
  bool cuda_graph = false;

  // generation_config.json of a checkpoint directory (empty config when absent).
  static GenerationConfig from_dir(const std::string& dir);
  // The caller's fields over the file's.
  static GenerationConfig merge(const GenerationConfig& file, const GenerationConfig& caller);

  int max_new_tokens_or(int d) const { return max_new_tokens.value_or(d); }
  bool sampling() const { return do_sample.value_or(false); }
};

// Applies repetition penalty, temperature, top-k and top-p to one row of logits (float32, CPU)
// and picks the next token: argmax when not sampling, else a draw from gen (when top-k and top-p
// leave a single candidate, that one, without a draw).
int64_t next_token(torch::Tensor logits, const std::vector<int64_t>& seen,
                   const GenerationConfig& config, at::Generator& gen);

struct GenerationResult {
  std::vector<std::vector<int64_t>> tokens;  // per prompt, without the EOS
  std::vector<bool> stopped;                 // hit EOS (else: max_new_tokens)
};

// A prompt batch after its prefill: what generation and label scoring continue from, so that
// one forward pass can serve both (extract --vlm-mode generate).
struct Prefill {
  KVCache cache;                 // the prompts' keys and values
  torch::Tensor last_logits;     // [B, vocab] at the last position
  torch::Tensor key_mask;        // int64 [B, T] (CPU): 1 = a token, 0 = left padding
  torch::Tensor input_ids;       // int64 [B, T] (CPU): the history a repetition penalty sees
  torch::Tensor rope_deltas;     // [B]
  torch::Tensor image_features;  // [visual tokens, hidden]: the merger's output, images in order
  std::vector<GridTHW> grids;

  // Row r alone, its cache copied (to generate for one prompt of a batch).
  Prefill row(int64_t r) const;
};

Prefill prefill(Qwen2VLImpl& model, const Qwen2VLInputs& inputs);

// Generates for a batch (left-padded); on_token(row, token) streams tokens as they come.
GenerationResult generate(Qwen2VLImpl& model, const Qwen2VLInputs& inputs,
                          const GenerationConfig& config,
                          const std::function<void(int64_t, int64_t)>& on_token = {});
// The same after a prefill (its cache is consumed).
GenerationResult generate(Qwen2VLImpl& model, Prefill prefilled, const GenerationConfig& config,
                          const std::function<void(int64_t, int64_t)>& on_token = {});

}  // namespace emovlm
