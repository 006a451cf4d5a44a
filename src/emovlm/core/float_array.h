// A dense float32 array with its shape: what the torch-free image preprocessors produce;
// core/tensor_io.h converts it to a tensor.
#pragma once

#include <cstdint>
#include <vector>

namespace emovlm {

struct FloatArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

}  // namespace emovlm
