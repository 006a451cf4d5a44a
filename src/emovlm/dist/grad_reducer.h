// The gradients of an optimizer step summed over the ranks while backward still runs, as
// PyTorch's DistributedDataParallel does. The parameters are cut into buckets in the reverse of
// their order (the order backward reaches a network's layers in), each of one dtype and device
// and at most dist::kBucketBytes. During the step's last backward on this process (arm()), a hook
// runs after each parameter's gradient is accumulated into .grad, and a bucket is sent as soon as
// all of its parameters have theirs, the buckets in order on every rank. finish() sends what
// backward did not reach and writes the sums into .grad: the same sums as dist::all_reduce_sum of
// every .grad after backward, with the communication under the rest of backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

namespace emovlm::dist {

class GradReducer {
 public:
  explicit GradReducer(std::vector<at::Tensor> params);  // hooks on each parameter
  ~GradReducer();                                        // removes them
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // The next backward is the last of this step on this process.
  void arm();
  // Sends the buckets not sent yet, waits for all, and leaves the sums in the parameters' .grad
  // (a parameter without a gradient gets the sum of the others'). Without arm(), or when the
  // armed backward did not run, it sums everything now.
  void finish();

 private:
  struct State;
  std::shared_ptr<State> s_;  // shared with the hooks
};

}  // namespace emovlm::dist
