// Small timing helpers for the benchmarks: medians of repeated runs and the bf16/fp32 matmul
// rate of this machine measured in the same run (memory figures: emovlm/core/memory.h).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/record_function.h>
#include <torch/torch.h>

namespace emovlm::bench {

inline double seconds_of(const std::function<void()>& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  if (torch::cuda::is_available()) torch::cuda::synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Median seconds of `reps` runs after `warmup` runs.
inline double median_seconds(const std::function<void()>& fn, int reps = 5, int warmup = 1) {
  for (int i = 0; i < warmup; ++i) seconds_of(fn);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) t.push_back(seconds_of(fn));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// FLOP/s of an n x n x n matmul in dtype on device.
inline double matmul_rate(torch::ScalarType dtype, torch::Device device, int64_t n = 2048,
                          int reps = 5) {
  torch::NoGradGuard ng;
  auto a = torch::randn({n, n}, torch::TensorOptions().device(device)).to(dtype);
  auto b = torch::randn({n, n}, torch::TensorOptions().device(device)).to(dtype);
  double s = median_seconds([&] { auto c = torch::mm(a, b); }, reps, 1);
  return 2.0 * n * n * n / s;
}

// Fills every parameter quickly with small pseudo-random values (benchmarks need finite,
// non-degenerate weights, not a distribution): windows of a 4 M-value random block, shifted for
// every chunk so that rows differ.
inline void fast_random_fill(torch::nn::Module& m, double std = 0.02) {
  torch::NoGradGuard ng;
  const int64_t B = 1 << 22, chunk = 1 << 20;
  torch::Tensor block = torch::randn({B}) * std;
  int64_t shift = 0;
  for (auto& p : m.parameters()) {
    if (block.device() != p.device()) block = block.to(p.device());
    torch::Tensor flat = p.view({-1});
    for (int64_t off = 0; off < flat.numel(); off += chunk) {
      const int64_t len = std::min(chunk, flat.numel() - off);
      shift = (shift * 1103515245 + 12345) % (B - chunk);
      flat.narrow(0, off, len).copy_(block.narrow(0, shift, len));
    }
  }
}

// Operators dispatched on this thread while fn runs (RecordFunction callbacks): `top` called by
// the caller, `all` including those they call, `leaf` calling none (kernels and views). A proxy
// for the launches of a launch-bound GPU step, measurable on any machine.
struct OpCount {
  int64_t top = 0, all = 0, leaf = 0;
  std::map<std::string, int64_t> top_names;  // how often each operator was called from the caller
};

namespace detail {
inline thread_local std::vector<bool> op_stack;  // per open operator: whether it called another
inline thread_local OpCount op_count;
inline std::unique_ptr<at::ObserverContext> op_start(const at::RecordFunction& fn) {
  if (op_stack.empty()) {
    ++op_count.top;
    ++op_count.top_names[fn.name()];
  } else {
    op_stack.back() = true;
  }
  op_stack.push_back(false);
  ++op_count.all;
  return nullptr;
}
inline void op_end(const at::RecordFunction&, at::ObserverContext*) {
  if (op_stack.empty()) return;
  if (!op_stack.back()) ++op_count.leaf;
  op_stack.pop_back();
}
}  // namespace detail

inline OpCount count_ops(const std::function<void()>& fn) {
  detail::op_count = {};
  detail::op_stack.clear();
  at::CallbackHandle h =
      at::addThreadLocalCallback(at::RecordFunctionCallback(detail::op_start, detail::op_end)
                                     .scopes({at::RecordScope::FUNCTION}));
  fn();
  at::removeCallback(h);
  return detail::op_count;
}

}  // namespace emovlm::bench
