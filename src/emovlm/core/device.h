// Where a model runs and in what precision, as the library's options carry them. Names are parsed
// once, where a command's flags or a file's fields are read, so the library only sees valid values
// and records canonical dtype names ("bf16") in what it writes. This header has no torch;
// tensor_io.h converts to torch's types.
#pragma once

#include <string>

namespace emovlm {

enum class ComputeDtype { f32, bf16, f16 };

// "f32", "bf16" or "f16": the names flags take and artifacts record.
const char* dtype_name(ComputeDtype dtype);
// Reads "f32"/"float32", "bf16"/"bfloat16", "f16"/"float16"; `field` names the flag or the file's
// field in the error.
ComputeDtype parse_compute_dtype(const std::string& name, const std::string& field = "--dtype");

struct ComputeDevice {
  // automatic: CUDA when this build and this machine have a CUDA device, else the CPU, decided
  // where the device is used (a command that never uses it does not probe for CUDA)
  enum class Kind { automatic, cpu, cuda };
  Kind kind = Kind::automatic;
  // a CUDA device's number; -1: the current one (under a launcher, the local rank's)
  int index = -1;

  std::string name() const;  // "auto", "cpu", "cuda" or "cuda:N"
  bool operator==(const ComputeDevice& other) const {
    return kind == other.kind && index == other.index;
  }
  // cpu or cuda: automatic decided now.
  ComputeDevice resolved() const;

  static ComputeDevice cpu() { return {Kind::cpu, -1}; }
  static ComputeDevice cuda(int index = -1) { return {Kind::cuda, index}; }
};

// Reads "auto", "cpu", "cuda" or "cuda:N"; CUDA where this build or this machine has none (or not
// that device) is an error naming `field`.
ComputeDevice parse_compute_device(const std::string& name, const std::string& field = "--device");

}  // namespace emovlm
