#include "emovlm/core/device.h"

#include <torch/torch.h>

#include <cctype>

#include "emovlm/core/error.h"

namespace emovlm {

const char* dtype_name(ComputeDtype dtype) {
  switch (dtype) {
    case ComputeDtype::f32:
      return "f32";
    case ComputeDtype::bf16:
      return "bf16";
    case ComputeDtype::f16:
      return "f16";
  }
  return "?";
}

ComputeDtype parse_compute_dtype(const std::string& name, const std::string& field) {
  if (name == "f32" || name == "float32") return ComputeDtype::f32;
  if (name == "bf16" || name == "bfloat16") return ComputeDtype::bf16;
  if (name == "f16" || name == "float16") return ComputeDtype::f16;
  throw Error(cat(field, " must be bf16, f16 or f32, not '", name, "'"));
}

std::string ComputeDevice::name() const {
  switch (kind) {
    case Kind::automatic:
      return "auto";
    case Kind::cpu:
      return "cpu";
    case Kind::cuda:
      break;
  }
  return index < 0 ? "cuda" : cat("cuda:", index);
}

ComputeDevice ComputeDevice::resolved() const {
  if (kind != Kind::automatic) return *this;
  return torch::cuda::is_available() ? cuda() : cpu();
}

ComputeDevice parse_compute_device(const std::string& name, const std::string& field) {
  if (name == "auto") return ComputeDevice();
  if (name == "cpu") return ComputeDevice::cpu();
  ComputeDevice d = ComputeDevice::cuda();
  bool valid = name == "cuda";
  if (name.rfind("cuda:", 0) == 0 && name.size() > 5 && name.size() < 10) {
    valid = true;
    for (size_t i = 5; i < name.size(); ++i)
      valid = valid && std::isdigit(static_cast<unsigned char>(name[i]));
    if (valid) d.index = std::stoi(name.substr(5));
  }
  if (!valid) throw Error(cat(field, " must be cpu, cuda, cuda:N or auto, not '", name, "'"));
  if (!torch::cuda::is_available())
    throw Error(
        cat(field, " ", name, ": this build of libtorch or this machine has no CUDA device"));
  if (d.index >= static_cast<int>(torch::cuda::device_count()))
    throw Error(cat(field, " ", name, ": this machine has ", torch::cuda::device_count(),
                    " CUDA device(s)"));
  return d;
}

}  // namespace emovlm
