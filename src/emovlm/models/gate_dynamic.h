// The dynamic gate: softmax(Linear(2C, 2)) over cat(vlm, head) weighs the two inputs, then
// Linear(C, C). Weights "gate.{weight,bias}", "fc.{weight,bias}".
#pragma once

#include <torch/torch.h>

#include "emovlm/models/gates.h"

namespace emovlm {

class DynamicGateImpl : public GateImpl {
 public:
  explicit DynamicGateImpl(const GateConfig& config);

  Linear gate{nullptr}, fc{nullptr};

 protected:
  torch::Tensor fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                     torch::Tensor* weights) override;
  void add_average(double head_weight, double vlm_weight) override;
};
TORCH_MODULE(DynamicGate);

}  // namespace emovlm
