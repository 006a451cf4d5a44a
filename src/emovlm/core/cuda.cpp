// CUDA graph recording and replay on a stream of its own (at::cuda::CUDAGraph); the caching
// allocator's statistics.
#include "emovlm/core/cuda.h"

#include <torch/torch.h>

#include "emovlm/core/error.h"

#if defined(EMOVLM_WITH_CUDA)
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace emovlm {

#if defined(EMOVLM_WITH_CUDA)

struct CudaGraph::State {
  explicit State(c10::Device d)
      : device(d), stream(at::cuda::getStreamFromPool(false, d.index())) {}
  c10::Device device;
  at::cuda::CUDAStream stream;  // graphs are recorded on a stream other than the default one
  at::cuda::CUDAGraph graph;
};

namespace {

// fn on `stream`, ordered after the caller's queued work and before the caller's later work
void on_stream(const at::cuda::CUDAStream& stream, c10::Device device,
               const std::function<void()>& fn) {
  c10::cuda::CUDAGuard device_guard(device);
  at::cuda::CUDAStream caller = at::cuda::getCurrentCUDAStream(device.index());
  at::cuda::CUDAEvent before, after;
  before.record(caller);
  before.block(stream);
  {
    c10::cuda::CUDAStreamGuard stream_guard(stream);
    fn();
  }
  after.record(stream);
  after.block(caller);
}

}  // namespace

bool CudaGraph::available() {
  return torch::cuda::is_available();
}

CudaGraph::CudaGraph(c10::Device device) {
  if (!device.is_cuda())
    throw Error(cat("CUDA graphs: device ", device.str(), " is not a CUDA device"));
  if (!available()) throw Error("CUDA graphs: no CUDA device is available");
  if (!device.has_index()) device = c10::Device(c10::kCUDA, 0);
  state_ = std::make_unique<State>(device);
}

CudaGraph::~CudaGraph() = default;

void CudaGraph::run_eager(const std::function<void()>& fn) {
  on_stream(state_->stream, state_->device, fn);
}

void CudaGraph::capture(const std::function<void()>& fn) {
  if (captured_) throw Error("CUDA graphs: this graph is already recorded");
  on_stream(state_->stream, state_->device, [&] {
    state_->graph.capture_begin();
    try {
      fn();
    } catch (...) {
      try {
        state_->graph.capture_end();  // take the stream out of capture mode before reporting
      } catch (...) {
        // an invalidated capture fails to end as well: the first error is the one to report
      }
      throw;
    }
    state_->graph.capture_end();
  });
  captured_ = true;
}

void CudaGraph::replay() {
  if (!captured_) throw Error("CUDA graphs: replay before capture");
  on_stream(state_->stream, state_->device, [&] { state_->graph.replay(); });
}

double cuda_peak_allocated_gib(int index) {
  if (!torch::cuda::is_available()) return -1;
  auto stats =
      c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(index));
  return static_cast<double>(stats.allocated_bytes[0].peak) /
         (1024.0 * 1024.0 * 1024.0);  // [0]: all pools
}

void use_cuda_device(int index) {
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
}

void reset_cuda_peak(int index) {
  if (torch::cuda::is_available())
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(index));
}

#else  // a libtorch without CUDA

struct CudaGraph::State {};

bool CudaGraph::available() {
  return false;
}

CudaGraph::CudaGraph(c10::Device device) {
  throw Error(cat("CUDA graphs on ", device.str(),
                  ": this build of emovlm has no CUDA libtorch (EMOVLM_CUDA_GRAPHS)"));
}

CudaGraph::~CudaGraph() = default;

void CudaGraph::run_eager(const std::function<void()>&) {
  throw Error("CUDA graphs: not available in this build");
}
void CudaGraph::capture(const std::function<void()>&) {
  throw Error("CUDA graphs: not available in this build");
}
void CudaGraph::replay() {
  throw Error("CUDA graphs: not available in this build");
}

double cuda_peak_allocated_gib(int) {
  return -1;
}
void reset_cuda_peak(int) {}
void use_cuda_device(int) {}

#endif

}  // namespace emovlm
