// The cross gate.
#include "emovlm/models/gate_cross.h"

#include <algorithm>
#include <cmath>

namespace emovlm {

CrossGateImpl::CrossGateImpl(const GateConfig& config) : GateImpl(config) {
  const int64_t c = config.num_classes;
  gate_vlm = register_module("gate_vlm", default_linear(c, c));    // sigmoid(L(head)) weighs vlm
  gate_head = register_module("gate_head", default_linear(c, c));  // sigmoid(L(vlm)) weighs head
  fc = register_module("fc", default_linear(c, c));
}

torch::Tensor CrossGateImpl::fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                                  torch::Tensor* weights) {
  torch::Tensor g1 = torch::sigmoid(gate_vlm(head)), g2 = torch::sigmoid(gate_head(vlm));
  if (weights) *weights = torch::stack({g1.mean(-1), g2.mean(-1)}, 1);
  return fc(g1 * vlm + g2 * head);
}

void CrossGateImpl::add_average(double head_weight, double vlm_weight) {
  // constant gates sigmoid(b) at the start, with shares s and 1 - s as the dynamic gate's (each
  // weight at least 1e-3), and fc scaling back by the weights' sum
  const double wv = std::max(vlm_weight, 1e-3), wh = std::max(head_weight, 1e-3),
               share_v = wv / (wv + wh);
  auto logit = [](double p) { return std::log(p / (1 - p)); };
  gate_vlm->bias.add_(logit(share_v));
  gate_head->bias.add_(logit(1 - share_v));
  fc->weight.add_(torch::eye(num_classes()) * (wv + wh));
}

}  // namespace emovlm
