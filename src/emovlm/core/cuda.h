// What needs the CUDA headers: graphs (the kernels a function launches, recorded once and
// replayed with one launch: a batch-1 decoding step of a 7B model is about a thousand small
// kernels whose launches cost more than their work) and the caching allocator's peak.
//
// Compiled in when the build links a CUDA libtorch (EMOVLM_WITH_CUDA, CMake option
// EMOVLM_CUDA_GRAPHS); elsewhere CudaGraph::available() is false, its constructor throws and
// the memory figures are -1.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <memory>

namespace emovlm {

class CudaGraph {
 public:
  // Whether graphs can be recorded here: a CUDA build of the library and a CUDA device.
  static bool available();

  explicit CudaGraph(c10::Device device);
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Runs fn on the graph's stream, not recorded: the warm-up that must precede capture (lazy
  // initialisations such as cuBLAS workspaces cannot happen while recording).
  void run_eager(const std::function<void()>& fn);
  // Records fn on the graph's stream; nothing runs. fn must work on tensors that outlive the
  // graph (their addresses are baked in), must not wait for or copy from the host, and the
  // tensors it allocates live in the graph's own memory pool (valid until the graph is destroyed,
  // rewritten by every replay).
  void capture(const std::function<void()>& fn);
  bool captured() const { return captured_; }
  // Runs the recorded kernels. Both run_eager and replay start after the work already queued on
  // the caller's current stream, and later work on that stream starts after them.
  void replay();

 private:
  struct State;
  std::unique_ptr<State> state_;
  bool captured_ = false;
};

// The most memory the CUDA caching allocator had handed out on device `index` since the last
// reset_cuda_peak(index) (or the start), in GiB: what the tensors needed, the CUDA context and
// the allocator's reserve excluded. -1 without CUDA.
double cuda_peak_allocated_gib(int index = 0);
void reset_cuda_peak(int index = 0);

// Makes CUDA device `index` the current one: what "cuda" without an index (and --device auto)
// then means in this process. Nothing without CUDA.
void use_cuda_device(int index);

}  // namespace emovlm
