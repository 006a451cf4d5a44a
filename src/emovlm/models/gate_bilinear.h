// The bilinear gate: y_k = vlm^T W_k head + b_k (Bilinear(C, C, C)), then Linear(C, C).
// Weights "bilinear.{weight,bias}" ([C, C, C], [C]), "fc.{weight,bias}".
#pragma once

#include <torch/torch.h>

#include "emovlm/models/gates.h"

namespace emovlm {

class BilinearGateImpl : public GateImpl {
 public:
  explicit BilinearGateImpl(const GateConfig& config);

  std::shared_ptr<torch::nn::Module> bilinear;  // holds "weight" and "bias"
  torch::Tensor bilinear_weight, bilinear_bias;
  Linear fc{nullptr};

 protected:
  torch::Tensor fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                     torch::Tensor* weights) override;
  void add_average(double head_weight, double vlm_weight) override;
};
TORCH_MODULE(BilinearGate);

}  // namespace emovlm
