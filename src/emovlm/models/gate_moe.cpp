// The mixture-of-experts gate.
#include "emovlm/models/gate_moe.h"

#include <vector>

namespace emovlm {

MoeGateImpl::MoeGateImpl(const GateConfig& config) : GateImpl(config) {
  const int64_t c = config.num_classes;
  experts = register_module("experts", torch::nn::ModuleList());
  for (int i = 0; i < 3; ++i) experts->push_back(default_linear(2 * c, c));
  gate = register_module("gate", default_linear(2 * c, 3));
}

torch::Tensor MoeGateImpl::fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                                torch::Tensor* weights) {
  torch::Tensor both = torch::cat({vlm, head}, -1);  // [B, 2C]
  torch::Tensor g = torch::softmax(gate(both), -1);  // [B, 3]
  std::vector<torch::Tensor> outs;
  for (const auto& e : *experts) outs.push_back(e->as<LinearImpl>()->forward(both));
  torch::Tensor e = torch::stack(outs, 1);  // [B, 3, C]
  if (weights) *weights = g;
  return (g.unsqueeze(-1) * e).sum(1);
}

void MoeGateImpl::add_average(double head_weight, double vlm_weight) {
  // every expert starts as the average; the gate's mixture of equal experts is the average too
  for (auto& e : *experts) add_average_weight(*e->as<LinearImpl>(), head_weight, vlm_weight);
}

}  // namespace emovlm
