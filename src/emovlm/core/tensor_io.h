// safetensors <-> torch: zero-copy tensors from mapped files, and atomic saving of torch tensors.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "emovlm/core/device.h"
#include "emovlm/core/float_array.h"
#include "emovlm/core/safetensors.h"

namespace emovlm {

torch::ScalarType to_scalar_type(DType dtype);  // throws for dtypes torch lacks in this build
DType from_scalar_type(torch::ScalarType type);

// A CPU tensor over the mapped bytes (no copy) that keeps `owner` alive; copies only when the
// bytes are not aligned for the element type.
torch::Tensor tensor_from_view(const TensorView& view, std::shared_ptr<const void> owner);
// One tensor of a checkpoint (zero copy).
torch::Tensor load_tensor(const Checkpoint& checkpoint, const std::string& name);
// Every tensor of a file or checkpoint directory (zero copy).
std::map<std::string, torch::Tensor> load_tensors(const std::string& path);

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;
// Writes CPU copies of the tensors atomically (temporary file, fsync, rename).
void save_tensors(const std::string& path, const NamedTensors& tensors,
                  const std::map<std::string, std::string>& metadata = {});
void save_tensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata = {});
// The bytes save_tensors writes, in memory.
std::string tensors_to_safetensors(const NamedTensors& tensors,
                                   const std::map<std::string, std::string>& metadata = {});

torch::Tensor to_tensor(const FloatArray& array);

// The options' device (automatic decided now) and dtype as torch's.
torch::Device to_torch(ComputeDevice device);
torch::ScalarType to_torch(ComputeDtype dtype);

}  // namespace emovlm
