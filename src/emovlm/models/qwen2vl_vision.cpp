// Qwen2-VL vision tower.
#include "emovlm/models/qwen2vl_vision.h"

#include "emovlm/core/error.h"
#include "emovlm/core/torch_compat.h"

namespace emovlm {

PatchEmbedImpl::PatchEmbedImpl(const Qwen2VLVisionConfig& c) {
  proj_ = register_module("proj", std::make_shared<ProjImpl>());
  proj_->weight = proj_->register_parameter(
      "weight",
      torch::empty({c.embed_dim, c.in_chans, c.temporal_patch_size, c.patch_size, c.patch_size}));
}

torch::Tensor PatchEmbedImpl::forward(const torch::Tensor& pixel_values) {
  const torch::Tensor& w = proj_->weight;
  // The Conv3d with kernel = stride = the patch is a matmul: [N, C*T*P*P] x [C*T*P*P, E] -> [N, E]
  torch::Tensor w2 = w.reshape({w.size(0), -1});
  if (pixel_values.size(1) != w2.size(1))
    throw Error(cat("vision patch embedding: pixel_values have ", pixel_values.size(1),
                    " values per patch, the model expects ", w2.size(1)));
  return torch::matmul(pixel_values.to(w.scalar_type()), w2.t());
}

VisionAttentionImpl::VisionAttentionImpl(const Qwen2VLVisionConfig& c)
    : heads_(c.num_heads), head_dim_(c.head_dim()) {
  qkv = register_module("qkv", Linear(c.embed_dim, 3 * c.embed_dim, true));
  proj = register_module("proj", Linear(c.embed_dim, c.embed_dim, true));
}

torch::Tensor VisionAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                           const torch::Tensor& sin,
                                           const std::vector<int64_t>& cu_seqlens) {
  const int64_t n = x.size(0);
  // [N, 3*D] -> [N, 3, H, hd] -> [3, N, H, hd]
  torch::Tensor qkv_ = qkv(x).reshape({n, 3, heads_, head_dim_}).permute({1, 0, 2, 3});
  torch::Tensor q = qkv_[0], k = qkv_[1], v = qkv_[2];
  // rotary in float32: cos/sin [N, hd] -> [N, 1, hd]
  torch::Tensor c = cos.unsqueeze(1), s = sin.unsqueeze(1);
  torch::Tensor qf = q.to(torch::kFloat32), kf = k.to(torch::kFloat32);
  q = (qf * c + rotate_half(qf) * s).to(x.scalar_type());
  k = (kf * c + rotate_half(kf) * s).to(x.scalar_type());
  std::vector<torch::Tensor> outs;
  outs.reserve(cu_seqlens.size());
  // Attention within each image; consecutive images of one size go through one batched call.
  for (size_t i = 0; i + 1 < cu_seqlens.size();) {
    const int64_t b = cu_seqlens[i], len = cu_seqlens[i + 1] - cu_seqlens[i];
    size_t j = i + 1;
    while (j + 1 < cu_seqlens.size() && cu_seqlens[j + 1] - cu_seqlens[j] == len) ++j;
    const int64_t m = static_cast<int64_t>(j - i);
    // [m * len, H, hd] -> [m, len, H, hd] -> [m, H, len, hd]
    auto split = [&](const torch::Tensor& t) {
      return t.narrow(0, b, m * len).view({m, len, heads_, head_dim_}).transpose(1, 2);
    };
    torch::Tensor o = compat::scaled_dot_product_attention(split(q), split(k), split(v));
    outs.push_back(o.transpose(1, 2).reshape(
        {m * len, heads_ * head_dim_}));  // [m, H, len, hd] -> [m * len, D]
    i = j;
  }
  return proj(outs.size() == 1 ? outs[0] : torch::cat(outs, 0));
}

VisionMlpImpl::VisionMlpImpl(const Qwen2VLVisionConfig& c) : act_(c.hidden_act) {
  fc1 = register_module("fc1", Linear(c.embed_dim, c.mlp_dim(), true));
  fc2 = register_module("fc2", Linear(c.mlp_dim(), c.embed_dim, true));
}

torch::Tensor VisionMlpImpl::forward(const torch::Tensor& x) {
  return fc2(activation(act_, fc1(x)));
}

VisionBlockImpl::VisionBlockImpl(const Qwen2VLVisionConfig& c) {
  norm1 = register_module("norm1", LayerNorm(c.embed_dim, c.layer_norm_eps));
  norm2 = register_module("norm2", LayerNorm(c.embed_dim, c.layer_norm_eps));
  attn = register_module("attn", VisionAttention(c));
  mlp = register_module("mlp", VisionMlp(c));
}

torch::Tensor VisionBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                       const torch::Tensor& sin,
                                       const std::vector<int64_t>& cu_seqlens) {
  torch::Tensor h = x + attn(norm1(x), cos, sin, cu_seqlens);
  return h + mlp(norm2(h));
}

PatchMergerImpl::PatchMergerImpl(const Qwen2VLVisionConfig& c)
    : merged_dim_(c.embed_dim * c.spatial_merge_size * c.spatial_merge_size) {
  ln_q = register_module("ln_q", LayerNorm(c.embed_dim, c.layer_norm_eps));
  mlp_ = register_module("mlp", std::make_shared<MlpImpl>());
  mlp_->l0 = mlp_->register_module("0", Linear(merged_dim_, merged_dim_, true));
  mlp_->l2 = mlp_->register_module("2", Linear(merged_dim_, c.hidden_size, true));
}

torch::Tensor PatchMergerImpl::forward(const torch::Tensor& x) {
  // consecutive merge^2 patches form one token: [N, E] -> [N / m^2, m^2 * E]
  torch::Tensor h = ln_q(x).reshape({-1, merged_dim_});
  return mlp_->l2(torch::gelu(mlp_->l0(h)));
}

Qwen2VLVisionModelImpl::Qwen2VLVisionModelImpl(const Qwen2VLVisionConfig& c) : cfg_(c) {
  c.validate();
  patch_embed = register_module("patch_embed", PatchEmbed(c));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.depth; ++i) blocks->push_back(VisionBlock(c));
  merger = register_module("merger", PatchMerger(c));
}

std::pair<torch::Tensor, torch::Tensor> Qwen2VLVisionModelImpl::rotary(
    const std::vector<GridTHW>& grids, torch::Device device) const {
  const int64_t m = cfg_.spatial_merge_size;
  const int64_t dim = cfg_.head_dim() / 2;  // rotary dim per axis pair
  // inv_freq[i] = 1 / 10000^(2i / dim), i < dim / 2, computed in float32 as the reference's buffer;
  // the angles and their cos/sin in float64 (a float64 reference's), rounded to float32 at the end
  torch::Tensor inv_freq = (1.0 / torch::pow(10000.0, torch::arange(0, dim, 2, torch::kFloat32) /
                                                          static_cast<float>(dim)))
                               .to(torch::kFloat64);
  std::vector<int64_t> hs, ws;
  for (const GridTHW& g : grids) {
    const int64_t t = g[0], h = g[1], w = g[2];
    if (h % m || w % m)
      throw Error(
          cat("vision grid (", t, ", ", h, ", ", w, ") is not a multiple of the merge size ", m));
    for (int64_t f = 0; f < t; ++f)
      for (int64_t bh = 0; bh < h / m; ++bh)
        for (int64_t bw = 0; bw < w / m; ++bw)
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < m; ++j) {
              hs.push_back(bh * m + i);
              ws.push_back(bw * m + j);
            }
  }
  torch::Tensor hpos = torch::tensor(hs, torch::kFloat64),
                wpos = torch::tensor(ws, torch::kFloat64);
  // [N, dim/2] each -> [N, dim] -> duplicated [N, 2*dim] = [N, head_dim]
  torch::Tensor freqs = torch::cat({torch::outer(hpos, inv_freq), torch::outer(wpos, inv_freq)}, 1);
  torch::Tensor emb = torch::cat({freqs, freqs}, 1);
  return {emb.cos().to(torch::kFloat32).to(device), emb.sin().to(torch::kFloat32).to(device)};
}

VisionOutput Qwen2VLVisionModelImpl::forward(const torch::Tensor& pixel_values,
                                             const std::vector<GridTHW>& grids) {
  int64_t total = 0;
  std::vector<int64_t> cu{0};
  for (const GridTHW& g : grids)
    for (int64_t f = 0; f < g[0]; ++f) {  // attention within each frame of each image
      total += g[1] * g[2];
      cu.push_back(total);
    }
  if (pixel_values.dim() != 2 || pixel_values.size(0) != total)
    throw Error(cat("vision tower: pixel_values ", shape_str(pixel_values.sizes().vec()),
                    " do not match the grids (", total, " patches)"));
  auto [cos, sin] = rotary(grids, pixel_values.device());
  torch::Tensor h = patch_embed(pixel_values);
  for (const auto& b : *blocks) h = b->as<VisionBlockImpl>()->forward(h, cos, sin, cu);
  return {merger(h), h};
}

}  // namespace emovlm
