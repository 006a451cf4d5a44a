// The one place where libtorch versions differ: Debian's 1.13 on CPU machines, pip torch 2.x on
// GPUs.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>

#define EMOVLM_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||         \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace emovlm::compat {

namespace detail {

// The attention math for queries [..., Tq, D] that sit at rows q0.. of a causal square aligned to
// the end of the keys. Matmuls in the input dtype (bf16 runs on AMX); the softmax accumulates in
// float32 inside the kernel for bf16/f16 inputs.
inline torch::Tensor attention_math(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v,
                                    const c10::optional<torch::Tensor>& mask, bool is_causal,
                                    double s, int64_t causal_offset) {
  // [..., Tq, D] x [..., D, Tk] -> [..., Tq, Tk]
  torch::Tensor scores = torch::matmul(q * s, k.transpose(-2, -1));
  if (is_causal) {
    const int64_t tq = q.size(-2), tk = k.size(-2);
    torch::Tensor causal =
        torch::ones({tq, tk}, torch::TensorOptions().dtype(torch::kBool).device(q.device()))
            .tril(causal_offset);
    scores = scores.masked_fill(causal.logical_not(), -std::numeric_limits<float>::infinity());
  }
  if (mask.has_value()) {
    if (mask->scalar_type() == torch::kBool)
      scores = scores.masked_fill(mask->logical_not(), -std::numeric_limits<float>::infinity());
    else
      scores = scores + *mask;
  }
  // the weights in float32 whatever the inputs' dtype, as the reference's eager attention
  // (softmax(..., dtype=float32).to(query.dtype)): a float64 model rounds them to float32 too
  return torch::matmul(torch::softmax(scores, -1, torch::kFloat32).to(v.scalar_type()), v);
}

}  // namespace detail

// softmax(q k^T * scale + mask) v over the last two dimensions.
// q [..., Tq, D], k/v [..., Tk, D]; mask: bool (true = attend) or additive float, broadcastable to
// [..., Tq, Tk]; is_causal masks key j > query i (aligned to the end when Tk > Tq);
// scale defaults to 1/sqrt(D). Torch >= 2.1 uses the fused kernel; 1.13 the same math in steps,
// over blocks of 2048 queries to bound the memory of the scores.
inline torch::Tensor scaled_dot_product_attention(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const c10::optional<torch::Tensor>& mask = c10::nullopt, bool is_causal = false,
    c10::optional<double> scale = c10::nullopt, bool force_math = false) {
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
#if EMOVLM_TORCH_AT_LEAST(2, 1)
  // (float64 inputs take the math path: the fused kernel would keep the weights in float64)
  if (!force_math && q.scalar_type() != torch::kFloat64 && !(is_causal && mask.has_value()) &&
      !(is_causal && q.size(-2) != k.size(-2))) {
    return at::scaled_dot_product_attention(q, k, v, mask, 0.0, is_causal, s);
  }
#else
  (void)force_math;
#endif
  const int64_t tq = q.size(-2), tk = k.size(-2), block = 2048;
  if (tq <= block) return detail::attention_math(q, k, v, mask, is_causal, s, tk - tq);
  std::vector<torch::Tensor> outs;
  for (int64_t i = 0; i < tq; i += block) {
    const int64_t n = std::min(block, tq - i);
    c10::optional<torch::Tensor> m = mask;
    if (mask.has_value() && mask->dim() >= 2 && mask->size(-2) == tq) m = mask->narrow(-2, i, n);
    outs.push_back(detail::attention_math(q.narrow(-2, i, n), k, v, m, is_causal, s, tk - tq + i));
  }
  return torch::cat(outs, -2);
}

// Intra-op threads for the CPU path: n > 0, else every core. (Debian's libtorch starts with
// OpenMP at one thread on these machines: a bf16 matmul then runs at half the rate.)
inline void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
}

// The key of a parameter in Optimizer::state(): its TensorImpl address, printed as a string in
// libtorch 1.13, the pointer itself in 2.x.
using OptimizerStateKey =
    std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>::key_type;

template <typename Key = OptimizerStateKey>  // a template, so that only the taken branch compiles
Key optimizer_state_key(const torch::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;
    s << p.unsafeGetTensorImpl();
    return s.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

// Mixed precision for a scope, as Python's `torch.autocast(device_type, dtype)`: matmuls and
// convolutions run in `dtype` while the parameters stay float32 (their master copy). CPU and CUDA;
// the cache of casted weights is dropped when the outermost guard ends. enabled = false: no-op.
class AutocastGuard {
 public:
  AutocastGuard(torch::DeviceType device, torch::ScalarType type, bool enabled = true)
      : device_(device) {
    if (!enabled) return;
    if (device != torch::kCPU && device != torch::kCUDA) return;
    active_ = true;
    prev_enabled_ = is_enabled(device);
    prev_dtype_ = dtype(device);
    set(device, true, type);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set(device_, prev_enabled_, prev_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

  static bool is_enabled(torch::DeviceType device) {
#if EMOVLM_TORCH_AT_LEAST(2, 4)
    return at::autocast::is_autocast_enabled(device);
#else
    return device == torch::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
  }

  static torch::ScalarType dtype(torch::DeviceType device) {
#if EMOVLM_TORCH_AT_LEAST(2, 4)
    return at::autocast::get_autocast_dtype(device);
#else
    return device == torch::kCPU ? at::autocast::get_autocast_cpu_dtype()
                                 : at::autocast::get_autocast_gpu_dtype();
#endif
  }

 private:
  static void set(torch::DeviceType device, bool enabled, torch::ScalarType dtype) {
#if EMOVLM_TORCH_AT_LEAST(2, 4)
    at::autocast::set_autocast_dtype(device, dtype);
    at::autocast::set_autocast_enabled(device, enabled);
#else
    if (device == torch::kCPU) {
      at::autocast::set_autocast_cpu_dtype(dtype);
      at::autocast::set_cpu_enabled(enabled);
    } else {
      at::autocast::set_autocast_gpu_dtype(dtype);
      at::autocast::set_enabled(enabled);
    }
#endif
  }

  torch::DeviceType device_;
  bool active_ = false, prev_enabled_ = false;
  torch::ScalarType prev_dtype_ = torch::kBFloat16;
};

}  // namespace emovlm::compat
