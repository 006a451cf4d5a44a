// Deterministic label scoring for Qwen2-VL: the log-probability of each candidate answer after a
// prompt, all candidates in one forward pass over a token tree.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "emovlm/models/qwen2vl.h"
#include "emovlm/models/qwen2vl_generation.h"
#include "emovlm/models/qwen2vl_processor.h"

namespace emovlm {

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

// Mean over each image's visual tokens: features [sum tokens, hidden] -> [images, hidden].
torch::Tensor pool_image_features(const torch::Tensor& features, const std::vector<GridTHW>& grids,
                                  int64_t merge_size);

}  // namespace emovlm
