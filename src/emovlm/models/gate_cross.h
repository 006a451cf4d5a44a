// The cross gate: g1 = sigmoid(L1(head)) weighs the VLM input, g2 = sigmoid(L2(vlm)) the head's,
// then Linear(g1 vlm + g2 head). Weights "gate_vlm", "gate_head", "fc" (each {weight,bias}).
#pragma once

#include <torch/torch.h>

#include "emovlm/models/gates.h"

namespace emovlm {

class CrossGateImpl : public GateImpl {
 public:
  explicit CrossGateImpl(const GateConfig& config);

  Linear gate_vlm{nullptr}, gate_head{nullptr}, fc{nullptr};

 protected:
  torch::Tensor fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                     torch::Tensor* weights) override;
  void add_average(double head_weight, double vlm_weight) override;
};
TORCH_MODULE(CrossGate);

}  // namespace emovlm
