// Inputs, generation and label scoring for Qwen2-VL: the processor (chat text + images -> ids,
// pixels, grids; left padding), generation with a KV cache (greedy or sampled, with
// generation_config.json merged as the reference does), and deterministic label scoring.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "emovlm/image/preprocess.h"
#include "emovlm/models/qwen2vl.h"
#include "emovlm/text/tokenizer.h"

namespace emovlm {

// One prompt: rendered chat text with one <|image_pad|> per image (not yet expanded), and its images.
struct VlmPrompt {
  std::string text;
  std::vector<RgbImage> images;
};

// One prompt tokenized (its image pads expanded) with its images preprocessed: everything of a
// batch that does not depend on the other prompts, so worker threads can make it.
struct PreparedPrompt {
  std::vector<int32_t> ids;
  std::vector<torch::Tensor> pixels;  // per image [patches, patch_dim] float32
  std::vector<GridTHW> grids;
};

class Qwen2VLProcessor {
 public:
  Qwen2VLProcessor(Tokenizer tokenizer, Qwen2VLImageConfig image_config);
  static Qwen2VLProcessor from_dir(const std::string& dir);

  // Tokenizes and preprocesses; several prompts are left-padded with the pad token.
  // build = collate(prepare(each prompt)); prepare is safe to call from several threads.
  Qwen2VLInputs build(const std::vector<VlmPrompt>& prompts) const;
  PreparedPrompt prepare(const VlmPrompt& prompt) const;
  Qwen2VLInputs collate(const std::vector<PreparedPrompt>& prompts) const;
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const Qwen2VLImageConfig& image_config() const { return image_config_; }
  int32_t pad_id() const { return pad_id_; }

 private:
  Tokenizer tokenizer_;
  Qwen2VLImageConfig image_config_;
  int32_t pad_id_;
};

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

  // generation_config.json of a checkpoint directory (empty config when absent).
  static GenerationConfig from_dir(const std::string& dir);
  // The caller's fields over the file's.
  static GenerationConfig merge(const GenerationConfig& file, const GenerationConfig& caller);

  int max_new_tokens_or(int d) const { return max_new_tokens.value_or(d); }
  bool sampling() const { return do_sample.value_or(false); }
};

struct GenerationResult {
  std::vector<std::vector<int64_t>> tokens;  // per prompt, without the EOS
  std::vector<bool> stopped;                 // hit EOS (else: max_new_tokens)
};

// Generates for a batch (left-padded); on_token(row, token) streams tokens as they come.
GenerationResult generate(Qwen2VLImpl& model, const Qwen2VLInputs& inputs, const GenerationConfig& config,
                          const std::function<void(int64_t, int64_t)>& on_token = {});

// Applies repetition penalty, temperature, top-k and top-p to one row of logits (float32, CPU)
// and picks the next token: argmax when not sampling, else a draw from gen.
int64_t next_token(torch::Tensor logits, const std::vector<int64_t>& seen, const GenerationConfig& config,
                   at::Generator& gen);

// For each prompt, the sum of log-probabilities of each candidate continuation (token ids),
// the prompt's prefix computed once for all candidates. Returns [prompts, candidates] float64.
// deterministic: each prompt alone (results independent of the batch); else one padded batch.
// pooled (optional) receives each prompt's mean-pooled visual features [prompts, hidden] (float32,
// CPU) from the same forward pass: the distillation head's input, computed once.
torch::Tensor label_scores(Qwen2VLImpl& model, const Qwen2VLProcessor& processor, const std::vector<VlmPrompt>& prompts,
                           const std::vector<std::vector<int32_t>>& candidates, bool deterministic = true,
                           torch::Tensor* pooled = nullptr);

// The same for a built batch: one forward over all its rows.
torch::Tensor label_scores(Qwen2VLImpl& model, const Qwen2VLInputs& inputs, const std::vector<std::vector<int32_t>>& candidates,
                           torch::Tensor* pooled = nullptr);

// Mean over each image's visual tokens: features [sum tokens, hidden] -> [images, hidden].
torch::Tensor pool_image_features(const torch::Tensor& features, const std::vector<GridTHW>& grids, int64_t merge_size);

}  // namespace emovlm
