// The one weight loader: fills a module's parameters and buffers from a checkpoint by name, and
// reports every missing, unexpected and mis-shaped tensor at once.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "emovlm/core/safetensors.h"

namespace emovlm {

struct LoadOptions {
  torch::ScalarType dtype = torch::kFloat32;  // floating tensors are converted to this
  torch::Device device = torch::kCPU;
  // Module tensor names that may be absent from the checkpoint (left as they are).
  std::function<bool(const std::string&)> optional;
  // Checkpoint names that may stay unused (e.g. rotary inv_freq buffers).
  std::function<bool(const std::string&)> ignore_unused;
  // Candidate checkpoint names for a module name; the first present one is used.
  std::function<std::vector<std::string>(const std::string&)> candidates;
};

// Replaces each parameter's and buffer's data by the checkpoint tensor (zero copy when the dtype
// matches on the CPU: the parameter then points into the mapped file). Throws one Error listing
// every problem, naming the checkpoint path.
void load_weights(torch::nn::Module& module, const Checkpoint& checkpoint,
                  const LoadOptions& options);

// Casts every floating parameter of the module to dtype and moves it to device.
void to_dtype_device(torch::nn::Module& module, torch::ScalarType dtype, torch::Device device);

}  // namespace emovlm
