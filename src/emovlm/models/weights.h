// The one weight loader: fills a module's parameters and buffers from a checkpoint by name, and
// reports every missing, unexpected and mis-shaped tensor at once.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

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
  // Copies each checkpoint tensor into the module tensor's storage (converted to its dtype and
  // device; `dtype` and `device` are not used), for tensors that others hold on to, such as the
  // parameters an optimizer updates. Otherwise the module tensor's data is replaced.
  bool copy_into = false;
};

// Replaces each parameter's and buffer's data by the checkpoint tensor (zero copy when the dtype
// matches on the CPU: the parameter then points into the mapped file), or copies it in with
// `copy_into`. Throws one Error listing every problem, naming the checkpoint path.
void load_weights(torch::nn::Module& module, const Checkpoint& checkpoint,
                  const LoadOptions& options);
// The same from tensors in memory; `source` names where they come from in errors.
void load_weights(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                  const std::string& source, const LoadOptions& options);

// Writes the module's parameters and buffers under their names, with the given metadata.
void save_weights(const torch::nn::Module& module, const std::string& path,
                  const std::map<std::string, std::string>& metadata);

// The JSON object stored under `key` in a safetensors file's metadata; errors name the file.
nlohmann::json json_metadata(const std::string& path, const std::string& key);

// The number of scalars in the module's parameters.
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace emovlm
