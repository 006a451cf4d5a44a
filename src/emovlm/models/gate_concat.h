// The concat gate: Linear(2C, C) over cat(vlm, head). Weights "fc.{weight,bias}".
#pragma once

#include <torch/torch.h>

#include "emovlm/models/gates.h"

namespace emovlm {

class ConcatGateImpl : public GateImpl {
 public:
  explicit ConcatGateImpl(const GateConfig& config);

  Linear fc{nullptr};

 protected:
  torch::Tensor fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                     torch::Tensor* weights) override;
  void add_average(double head_weight, double vlm_weight) override;
};
TORCH_MODULE(ConcatGate);

}  // namespace emovlm
