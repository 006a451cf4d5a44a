// safetensors <-> torch.
#include "emovlm/core/tensor_io.h"

#include "emovlm/core/error.h"

namespace emovlm {

torch::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::BOOL:
      return torch::kBool;
    case DType::U8:
      return torch::kUInt8;
    case DType::I8:
      return torch::kInt8;
    case DType::I16:
      return torch::kInt16;
    case DType::F16:
      return torch::kFloat16;
    case DType::BF16:
      return torch::kBFloat16;
    case DType::I32:
      return torch::kInt32;
    case DType::F32:
      return torch::kFloat32;
    case DType::I64:
      return torch::kInt64;
    case DType::F64:
      return torch::kFloat64;
    default:
      throw Error(cat("dtype ", dtype_name(dtype), " has no tensor type in this libtorch build"));
  }
}

DType from_scalar_type(torch::ScalarType type) {
  switch (type) {
    case torch::kBool:
      return DType::BOOL;
    case torch::kUInt8:
      return DType::U8;
    case torch::kInt8:
      return DType::I8;
    case torch::kInt16:
      return DType::I16;
    case torch::kFloat16:
      return DType::F16;
    case torch::kBFloat16:
      return DType::BF16;
    case torch::kInt32:
      return DType::I32;
    case torch::kFloat32:
      return DType::F32;
    case torch::kInt64:
      return DType::I64;
    case torch::kFloat64:
      return DType::F64;
    default:
      throw Error(cat("tensor type ", c10::toString(type), " cannot be stored in safetensors"));
  }
}

torch::Tensor tensor_from_view(const TensorView& view, std::shared_ptr<const void> owner) {
  const torch::ScalarType st = to_scalar_type(view.dtype);
  auto opts = torch::TensorOptions().dtype(st);
  const size_t elem = dtype_size(view.dtype);
  if (view.nbytes == 0) return torch::empty(view.shape, opts);
  void* ptr = const_cast<uint8_t*>(view.data);  // mapped copy-on-write: writes never reach the file
  if (reinterpret_cast<uintptr_t>(ptr) % elem != 0) {
    torch::Tensor t = torch::empty(view.shape, opts);
    std::memcpy(t.data_ptr(), view.data, view.nbytes);
    return t;
  }
  return torch::from_blob(
      ptr, view.shape, [owner](void*) {}, opts);
}

torch::Tensor load_tensor(const Checkpoint& checkpoint, const std::string& name) {
  return tensor_from_view(checkpoint.get(name), checkpoint.file_of(name));
}

std::map<std::string, torch::Tensor> load_tensors(const std::string& path) {
  Checkpoint ck(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : ck.names()) out[name] = load_tensor(ck, name);
  return out;
}

namespace {

// Views onto CPU contiguous copies of the tensors (kept alive in `keep`).
std::vector<TensorView> cpu_views(const std::string& what, const NamedTensors& tensors,
                                  std::vector<torch::Tensor>& keep) {
  std::vector<TensorView> views;
  keep.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) throw Error(cat(what, ": tensor '", name, "' is undefined"));
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    keep.push_back(c);
    TensorView v;
    v.name = name;
    v.dtype = from_scalar_type(c.scalar_type());
    v.shape = c.sizes().vec();
    v.data = static_cast<const uint8_t*>(c.data_ptr());
    v.nbytes = c.numel() * c.element_size();
    views.push_back(std::move(v));
  }
  return views;
}

}  // namespace

void save_tensors(const std::string& path, const NamedTensors& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;
  save_safetensors(path, cpu_views(path, tensors, keep), metadata);
}

std::string tensors_to_safetensors(const NamedTensors& tensors,
                                   const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;
  return safetensors_bytes(cpu_views("tensors_to_safetensors", tensors, keep), metadata);
}

void save_tensors(const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  save_tensors(path, NamedTensors(tensors.begin(), tensors.end()), metadata);
}

torch::Tensor to_tensor(const FloatArray& array) {
  return torch::from_blob(const_cast<float*>(array.data.data()), array.shape, torch::kFloat32)
      .clone();
}

torch::Device to_torch(ComputeDevice device) {
  device = device.resolved();
  if (device.kind == ComputeDevice::Kind::cpu) return torch::Device(torch::kCPU);
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device.index));
}

torch::ScalarType to_torch(ComputeDtype dtype) {
  switch (dtype) {
    case ComputeDtype::bf16:
      return torch::kBFloat16;
    case ComputeDtype::f16:
      return torch::kFloat16;
    case ComputeDtype::f32:
      break;
  }
  return torch::kFloat32;
}

}  // namespace emovlm
