// The Qwen2-VL vision tower: patch embedding (Conv3d as one matmul), 2-D rotary embeddings,
// pre-norm blocks whose attention stays within each image, quick_gelu MLP, and the 2x2 PatchMerger.
// Submodules carry the checkpoint's names (visual.blocks.N.attn.qkv, visual.merger.mlp.0, ...).
#pragma once

#include <torch/torch.h>

#include <array>
#include <vector>

#include "emovlm/models/layers.h"
#include "emovlm/models/qwen2vl_config.h"

namespace emovlm {

using GridTHW = std::array<int64_t, 3>;

class PatchEmbedImpl : public torch::nn::Module {
 public:
  explicit PatchEmbedImpl(const Qwen2VLVisionConfig& c);
  torch::Tensor forward(const torch::Tensor& pixel_values);  // [N, C*T*P*P] -> [N, embed_dim]

 private:
  struct ProjImpl : torch::nn::Module {
    torch::Tensor weight;  // [embed_dim, C, T, P, P]
  };
  std::shared_ptr<ProjImpl> proj_;
};
TORCH_MODULE(PatchEmbed);

class VisionAttentionImpl : public torch::nn::Module {
 public:
  explicit VisionAttentionImpl(const Qwen2VLVisionConfig& c);
  // x [N, D]; cos/sin [N, head_dim] (float32); attention within [cu[i], cu[i+1]).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const std::vector<int64_t>& cu_seqlens);
  Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t heads_, head_dim_;
};
TORCH_MODULE(VisionAttention);

class VisionMlpImpl : public torch::nn::Module {
 public:
  explicit VisionMlpImpl(const Qwen2VLVisionConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  Linear fc1{nullptr}, fc2{nullptr};

 private:
  std::string act_;
};
TORCH_MODULE(VisionMlp);

class VisionBlockImpl : public torch::nn::Module {
 public:
  explicit VisionBlockImpl(const Qwen2VLVisionConfig& c);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const std::vector<int64_t>& cu_seqlens);
  LayerNorm norm1{nullptr}, norm2{nullptr};
  VisionAttention attn{nullptr};
  VisionMlp mlp{nullptr};
};
TORCH_MODULE(VisionBlock);

class PatchMergerImpl : public torch::nn::Module {
 public:
  explicit PatchMergerImpl(const Qwen2VLVisionConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // [N, embed_dim] -> [N / merge^2, hidden_size]
  LayerNorm ln_q{nullptr};

 private:
  struct MlpImpl : torch::nn::Module {
    Linear l0{nullptr}, l2{nullptr};  // "mlp.0", "mlp.2" (GELU between)
  };
  std::shared_ptr<MlpImpl> mlp_;
  int64_t merged_dim_;
};
TORCH_MODULE(PatchMerger);

struct VisionOutput {
  torch::Tensor merged;       // [sum_i t*h*w / merge^2, hidden_size]
  torch::Tensor last_hidden;  // [sum_i t*h*w, embed_dim], before the merger
};

class Qwen2VLVisionModelImpl : public torch::nn::Module {
 public:
  explicit Qwen2VLVisionModelImpl(const Qwen2VLVisionConfig& c);
  // pixel_values: the preprocessed patches of every image, concatenated in order; grids: their (t,
  // h, w).
  VisionOutput forward(const torch::Tensor& pixel_values, const std::vector<GridTHW>& grids);
  // Rotary cos/sin [N, head_dim] for the patch order of the given grids (float32).
  std::pair<torch::Tensor, torch::Tensor> rotary(const std::vector<GridTHW>& grids,
                                                 torch::Device device) const;
  const Qwen2VLVisionConfig& config() const { return cfg_; }

  PatchEmbed patch_embed{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  PatchMerger merger{nullptr};

 private:
  Qwen2VLVisionConfig cfg_;
};
TORCH_MODULE(Qwen2VLVisionModel);

}  // namespace emovlm
