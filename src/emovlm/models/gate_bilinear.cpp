// The bilinear gate.
#include "emovlm/models/gate_bilinear.h"

#include <cmath>

namespace emovlm {

BilinearGateImpl::BilinearGateImpl(const GateConfig& config) : GateImpl(config) {
  const int64_t c = config.num_classes;
  // torch.nn.Bilinear's initialisation: U(-1/sqrt(C), 1/sqrt(C)) for the weight, then the bias
  const double b = 1.0 / std::sqrt(static_cast<double>(c));
  bilinear = register_module("bilinear", std::make_shared<torch::nn::Module>());
  bilinear_weight = bilinear->register_parameter("weight", torch::empty({c, c, c}).uniform_(-b, b));
  bilinear_bias = bilinear->register_parameter("bias", torch::empty({c}).uniform_(-b, b));
  fc = register_module("fc", default_linear(c, c));
}

torch::Tensor BilinearGateImpl::fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                                     torch::Tensor*) {
  // y_k = v^T W_k h + b_k : [B, C] x [C, C, C] x [B, C] -> [B, C]
  torch::Tensor y = torch::einsum("bi,kij,bj->bk", {vlm, bilinear_weight, head}) + bilinear_bias;
  return fc(y);
}

void BilinearGateImpl::add_average(double head_weight, double) {
  // y_k = sum_ij v_i W_kij h_j with W_kij = head_weight [k == j]: y = head_weight * h * sum(v);
  // fc = I
  const int64_t c = num_classes();
  for (int64_t k = 0; k < c; ++k) bilinear_weight[k].select(1, k).add_(head_weight);
  fc->weight.add_(torch::eye(c));
}

}  // namespace emovlm
