// The dynamic gate.
#include "emovlm/models/gate_dynamic.h"

#include <algorithm>
#include <cmath>

namespace emovlm {

DynamicGateImpl::DynamicGateImpl(const GateConfig& config) : GateImpl(config) {
  const int64_t c = config.num_classes;
  gate = register_module("gate", default_linear(2 * c, 2));
  fc = register_module("fc", default_linear(c, c));
}

torch::Tensor DynamicGateImpl::fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                                    torch::Tensor* weights) {
  torch::Tensor w = torch::softmax(gate(torch::cat({vlm, head}, -1)), -1);  // [B, 2]
  if (weights) *weights = w;
  return fc(w.narrow(1, 0, 1) * vlm + w.narrow(1, 1, 1) * head);
}

void DynamicGateImpl::add_average(double head_weight, double vlm_weight) {
  // the inputs get shares s and 1 - s before fc scales back by the weights' sum; a share of 0
  // would need a logit of -inf, so each weight is at least 1e-3
  const double wv = std::max(vlm_weight, 1e-3), wh = std::max(head_weight, 1e-3),
               share_v = wv / (wv + wh);
  gate->bias[0].add_(std::log(share_v));  // softmax over (log s, log(1 - s)) = (s, 1 - s)
  gate->bias[1].add_(std::log(1 - share_v));
  fc->weight.add_(torch::eye(num_classes()) * (wv + wh));
}

}  // namespace emovlm
