// Inputs, generation and label scoring for Qwen2-VL: the processor (chat text + images -> ids,
// pixels, grids; left padding), generation with a KV cache (greedy or sampled, with
// generation_config.json merged as the reference does), and deterministic label scoring.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "emovlm/data/labels.h"
#include "emovlm/image/preprocess.h"
#include "emovlm/models/qwen2vl.h"
#include "emovlm/text/tokenizer.h"

namespace emovlm {

// One prompt: rendered chat text with one <|image_pad|> per image (not yet expanded), and its
// images.
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
  // `device`: where the pixel values go (the model's device): each image's are copied there and
  // joined there, instead of first into one host tensor (16 images of 448x448: 77 MB more to
  // write on the host, fresh pages each time). Token ids and masks stay on the host.
  Qwen2VLInputs build(const std::vector<VlmPrompt>& prompts,
                      torch::Device device = torch::kCPU) const;
  PreparedPrompt prepare(const VlmPrompt& prompt) const;
  Qwen2VLInputs collate(const std::vector<PreparedPrompt>& prompts,
                        torch::Device device = torch::kCPU) const;
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

class CudaGraph;

// Decoding steps of fixed shapes over a fixed-size KV cache (KVCache::fixed): each step reads
// its position from the device and attends over the whole cache with a mask, so every step
// launches the same kernels on the same buffers and a CUDA graph can replay it (recorded at the
// second step, after one eager warm-up step). Without graphs the steps run eagerly; either way
// the logits equal decode()'s up to the order of float sums.
class FixedDecoder {
 public:
  // Continues a prefill: `cache` (growing; its positions are copied), key_mask [B, cache.length]
  // (1 = a token, 0 = padding), rope_deltas [B]; room for max_new more positions.
  // cuda_graph: record and replay the step (a CUDA device and a build with graphs needed).
  FixedDecoder(Qwen2VLImpl& model, const KVCache& cache, const torch::Tensor& key_mask,
               const torch::Tensor& rope_deltas, int64_t max_new, bool cuda_graph);
  ~FixedDecoder();
  // ids [B, 1] (any device) at the next position -> logits [B, vocab] on the model's device, a
  // buffer that the next step overwrites.
  torch::Tensor step(const torch::Tensor& ids);
  int64_t length() const { return cache_.length; }  // positions in the cache, the prompt's included
  bool uses_graph() const { return graph_ != nullptr; }

 private:
  void run();  // one step on the fixed buffers: reads ids_ and the cache's slot, writes logits_

  Qwen2VLImpl& model_;
  KVCache cache_;
  torch::Tensor ids_;       // int64 [B, 1]
  torch::Tensor valid_;     // bool [B, capacity]: the keys a query may see
  torch::Tensor deltas_;    // int64 [B]: rope position = slot + delta
  torch::Tensor inv_freq_;  // float32 [head_dim / 2] on the device
  torch::Tensor logits_;    // [B, vocab]
  int64_t capacity_, steps_ = 0;
  std::unique_ptr<CudaGraph> graph_;
};

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

// Applies repetition penalty, temperature, top-k and top-p to one row of logits (float32, CPU)
// and picks the next token: argmax when not sampling, else a draw from gen (when top-k and top-p
// leave a single candidate, that one, without a draw).
int64_t next_token(torch::Tensor logits, const std::vector<int64_t>& seen,
                   const GenerationConfig& config, at::Generator& gen);

// For each prompt, the sum of log-probabilities of each candidate continuation (token ids),
// the prompt's prefix computed once for all candidates. Returns [prompts, candidates] float64.
// deterministic: each prompt alone (results independent of the batch); else one padded batch.
// pooled (optional) receives each prompt's mean-pooled visual features [prompts, hidden] (float32,
// CPU) from the same forward pass: the distillation head's input, computed once.
torch::Tensor label_scores(Qwen2VLImpl& model, const Qwen2VLProcessor& processor,
                           const std::vector<VlmPrompt>& prompts,
                           const std::vector<std::vector<int32_t>>& candidates,
                           bool deterministic = true, torch::Tensor* pooled = nullptr);

// The same for a built batch: one forward over all its rows.
torch::Tensor label_scores(Qwen2VLImpl& model, const Qwen2VLInputs& inputs,
                           const std::vector<std::vector<int32_t>>& candidates,
                           torch::Tensor* pooled = nullptr);
// The same after a prefill (its cache is consumed).
torch::Tensor label_scores(Qwen2VLImpl& model, Prefill prefilled,
                           const std::vector<std::vector<int32_t>>& candidates,
                           torch::Tensor* pooled = nullptr);

// The pipeline's question to the VLM about one image: the rendered categorical chat (the emotion
// system message, the image, the label list, the generation prompt), and each label's answer
// tokens ("{'emotion': '<label>'}<|im_end|>") as label_scores' candidates.
struct CategoricalQuery {
  std::string prompt;
  std::vector<std::vector<int32_t>> candidates;
};
CategoricalQuery categorical_query(const Tokenizer& tokenizer, const LabelSet& labels);

// The seed every command that samples (classify --mode generate, extract --vlm-mode generate,
// chat) draws a prompt's answer from: `seed` mixed with the content of the prompt's images (their
// sizes and pixels, as the model receives them), so an image gets the same answer whatever the
// command, the batch or the order it comes in. A prompt without images: `seed` itself.
uint64_t prompt_seed(uint64_t seed, const std::vector<RgbImage>& images);

// The reference's generate-and-parse sampling: do_sample at `temperature`, top_p 1, `seed`,
// merged with the checkpoint's generation_config.json (whose top_k=1 makes the published Instruct
// checkpoints greedy).
GenerationConfig reference_sampling(const std::string& vlm_dir, double temperature,
                                    int max_new_tokens, uint64_t seed, bool cuda_graph);

// Mean over each image's visual tokens: features [sum tokens, hidden] -> [images, hidden].
torch::Tensor pool_image_features(const torch::Tensor& features, const std::vector<GridTHW>& grids,
                                  int64_t merge_size);

}  // namespace emovlm
