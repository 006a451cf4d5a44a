// Gradient (activation) checkpointing: y = fn(x) without keeping fn's intermediate activations.
// The backward pass runs fn again with gradients on and back-propagates through the recomputation;
// the parameters fn uses get their .grad accumulated there, as PyTorch's reentrant checkpoint does.
// The RNG state (dropout) and the autocast state of the forward are restored for the recomputation,
// so the gradients equal those of the plain forward.
#pragma once

#include <torch/torch.h>

#include <functional>

namespace emovlm {

torch::Tensor checkpointed(std::function<torch::Tensor(const torch::Tensor&)> fn,
                           const torch::Tensor& x);

}  // namespace emovlm
