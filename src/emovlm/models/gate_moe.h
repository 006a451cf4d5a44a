// The mixture-of-experts gate: three Linear(2C, C) experts over cat(vlm, head), mixed by
// softmax(Linear(2C, 3)). Weights "experts.{0,1,2}.{weight,bias}", "gate.{weight,bias}".
#pragma once

#include <torch/torch.h>

#include "emovlm/models/gates.h"

namespace emovlm {

class MoeGateImpl : public GateImpl {
 public:
  explicit MoeGateImpl(const GateConfig& config);

  torch::nn::ModuleList experts{nullptr};
  Linear gate{nullptr};

 protected:
  torch::Tensor fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                     torch::Tensor* weights) override;
  void add_average(double head_weight, double vlm_weight) override;
};
TORCH_MODULE(MoeGate);

}  // namespace emovlm
