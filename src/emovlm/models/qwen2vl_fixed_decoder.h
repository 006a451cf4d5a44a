// Fixed-shape decoding steps for Qwen2-VL, the form a CUDA graph can record and replay.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "emovlm/models/qwen2vl.h"

namespace emovlm {

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

}  // namespace emovlm
