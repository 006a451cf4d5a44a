// The concat gate.
#include "emovlm/models/gate_concat.h"

namespace emovlm {

ConcatGateImpl::ConcatGateImpl(const GateConfig& config) : GateImpl(config) {
  const int64_t c = config.num_classes;
  fc = register_module("fc", default_linear(2 * c, c));
}

torch::Tensor ConcatGateImpl::fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                                   torch::Tensor*) {
  return fc(torch::cat({vlm, head}, -1));
}

void ConcatGateImpl::add_average(double head_weight, double vlm_weight) {
  add_average_weight(*fc, head_weight, vlm_weight);
}

}  // namespace emovlm
