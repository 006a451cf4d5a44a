// The one place where libtorch versions differ: Debian's 1.13 on CPU machines, pip torch 2.x on GPUs.
#pragma once

#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>

#define EMOVLM_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace emovlm::compat {

// softmax(q k^T * scale + mask) v over the last two dimensions.
// q [..., Tq, D], k/v [..., Tk, D]; mask: bool (true = attend) or additive float, broadcastable to
// [..., Tq, Tk]; is_causal masks key j > query i (aligned to the end when Tk > Tq);
// scale defaults to 1/sqrt(D). Torch >= 2.1 uses the fused kernel, 1.13 the same math in steps.
inline torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& v,
                                                  const c10::optional<torch::Tensor>& mask = c10::nullopt,
                                                  bool is_causal = false, c10::optional<double> scale = c10::nullopt,
                                                  bool force_math = false) {
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
#if EMOVLM_TORCH_AT_LEAST(2, 1)
  if (!force_math && !(is_causal && mask.has_value()) && !(is_causal && q.size(-2) != k.size(-2))) {
    return at::scaled_dot_product_attention(q, k, v, mask, 0.0, is_causal, s);
  }
#else
  (void)force_math;
#endif
  // Scores and softmax in float32 (as the fused kernels accumulate): bf16 scores would round
  // every logit to 8 bits before the softmax. [..., Tq, D] x [..., D, Tk] -> [..., Tq, Tk]
  const auto wide = torch::promote_types(q.scalar_type(), torch::kFloat);
  torch::Tensor scores = torch::matmul(q.to(wide), k.to(wide).transpose(-2, -1)) * s;
  if (is_causal) {
    const int64_t tq = q.size(-2), tk = k.size(-2);
    torch::Tensor causal =
        torch::ones({tq, tk}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).tril(tk - tq);
    scores = scores.masked_fill(causal.logical_not(), -std::numeric_limits<float>::infinity());
  }
  if (mask.has_value()) {
    if (mask->scalar_type() == torch::kBool)
      scores = scores.masked_fill(mask->logical_not(), -std::numeric_limits<float>::infinity());
    else
      scores = scores + *mask;
  }
  torch::Tensor probs = torch::softmax(scores, -1);
  return torch::matmul(probs, v.to(wide)).to(v.scalar_type());
}

// Number of intra-op threads the CPU path uses.
inline void set_num_threads(int n) {
  if (n > 0) torch::set_num_threads(n);
}

}  // namespace emovlm::compat
