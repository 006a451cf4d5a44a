// Fixed-shape decoding steps, eager or replayed as a CUDA graph.
#include "emovlm/models/qwen2vl_fixed_decoder.h"

#include "emovlm/core/cuda.h"
#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"

namespace emovlm {

FixedDecoder::FixedDecoder(Qwen2VLImpl& model, const KVCache& cache, const torch::Tensor& key_mask,
                           const torch::Tensor& rope_deltas, int64_t max_new, bool cuda_graph)
    : model_(model), capacity_(cache.length + max_new) {
  if (max_new < 1) throw Error(cat("FixedDecoder: room for ", max_new, " new positions"));
  const torch::Device dev = model.device();
  const int64_t B = key_mask.size(0);
  if (key_mask.size(1) != cache.length)
    throw Error(cat("FixedDecoder: key mask ", shape_str(key_mask.sizes().vec()),
                    " for a cache of ", cache.length, " positions"));
  cache_ = cache.fixed(capacity_);
  ids_ = torch::zeros({B, 1}, torch::TensorOptions().dtype(torch::kInt64).device(dev));
  valid_ = torch::zeros({B, capacity_}, torch::TensorOptions().dtype(torch::kBool).device(dev));
  valid_.narrow(1, 0, cache.length).copy_(key_mask.to(dev).to(torch::kBool));
  deltas_ = rope_deltas.to(dev).to(torch::kInt64).view({B});
  inv_freq_ = model.model->inv_freq(dev);
  if (cuda_graph) graph_ = std::make_unique<CudaGraph>(dev);
}

FixedDecoder::~FixedDecoder() = default;

void FixedDecoder::run() {
  const int64_t B = ids_.size(0);
  valid_.index_fill_(1, cache_.slot, true);  // the new position is a key from now on
  // every M-RoPE axis of a generated token is at slot + delta: [B] -> [3, B, 1]
  torch::Tensor pos = (cache_.slot + deltas_).view({1, B, 1}).expand({3, B, 1});
  auto [cos, sin] = model_.model->rope(pos, model_.dtype(), inv_freq_);
  torch::Tensor emb = model_.model->embed_tokens(ids_);
  // [B, capacity] -> [B, 1, 1, capacity]: one query row per sequence
  torch::Tensor h =
      model_.model->forward_rotary(emb, cos, sin, valid_.view({B, 1, 1, capacity_}), &cache_);
  logits_ = model_.lm_head(h).select(1, 0);  // [B, 1, V] -> [B, V]
}

torch::Tensor FixedDecoder::step(const torch::Tensor& ids) {
  torch::NoGradGuard ng;
  const int64_t before = cache_.length;
  if (before >= capacity_)
    throw Error(cat("FixedDecoder: the cache is full (", capacity_, " positions)"));
  if (ids.sizes() != ids_.sizes())
    throw Error(cat("FixedDecoder: ids ", shape_str(ids.sizes().vec()), ", expected ",
                    shape_str(ids_.sizes().vec())));
  ids_.copy_(ids);
  if (!graph_) {
    run();
  } else if (steps_ == 0) {
    graph_->run_eager([&] { run(); });  // the first step: warm-up, the same work
  } else {
    if (!graph_->captured()) graph_->capture([&] { run(); });
    graph_->replay();
  }
  // the cache's host-side count moves only when run() runs on the host, not at replays
  cache_.length = before + 1;
  ++steps_;
  return logits_;
}

}  // namespace emovlm
