// The gates' config, shared interface and factory.
#include "emovlm/models/gates.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/models/gate_bilinear.h"
#include "emovlm/models/gate_concat.h"
#include "emovlm/models/gate_cross.h"
#include "emovlm/models/gate_dynamic.h"
#include "emovlm/models/gate_moe.h"
#include "emovlm/models/saved_module.h"
#include "emovlm/models/weights.h"

namespace emovlm {

const std::vector<std::string>& gate_kinds() {
  static const std::vector<std::string> k{"concat", "moe", "bilinear", "dynamic", "cross"};
  return k;
}

GateConfig GateConfig::from_json(const nlohmann::json& j, const std::string& where) {
  GateConfig c;
  c.kind = json_required<std::string>(j, "kind", where);
  c.num_classes = json_required<int64_t>(j, "num_classes", where);
  return c;
}

void GateConfig::validate() const {
  check_range(num_classes, 2, int64_t{1} << 20, "gate: num_classes");
  const auto& k = gate_kinds();
  if (std::find(k.begin(), k.end(), kind) == k.end())
    throw Error(cat("gate: kind '", kind, "' is not one of concat, moe, bilinear, dynamic, cross"));
}

nlohmann::json GateConfig::to_json() const {
  return {{"kind", kind}, {"num_classes", num_classes}};
}

GateImpl::GateImpl(const GateConfig& config) : config_(config) {
  config_.validate();
}

torch::Tensor GateImpl::forward(const torch::Tensor& vlm, const torch::Tensor& head,
                                torch::Tensor* weights) {
  return fuse(vlm.to(head.scalar_type()), head, weights);
}

void GateImpl::init_average(double head_weight, double vlm_weight, double noise) {
  check(std::isfinite(head_weight) && head_weight >= 0 && std::isfinite(vlm_weight) &&
            vlm_weight >= 0,
        cat("gate: the inputs' starting weights must be finite and >= 0, not ", head_weight,
            " and ", vlm_weight));
  torch::NoGradGuard ng;
  for (auto& p : parameters()) p.mul_(noise);  // the default init, scaled down
  add_average(head_weight, vlm_weight);
}

Gate make_gate(const GateConfig& config) {
  config.validate();
  std::shared_ptr<GateImpl> g;
  if (config.kind == "concat")
    g = std::make_shared<ConcatGateImpl>(config);
  else if (config.kind == "moe")
    g = std::make_shared<MoeGateImpl>(config);
  else if (config.kind == "bilinear")
    g = std::make_shared<BilinearGateImpl>(config);
  else if (config.kind == "dynamic")
    g = std::make_shared<DynamicGateImpl>(config);
  else if (config.kind == "cross")
    g = std::make_shared<CrossGateImpl>(config);
  else  // validate() refuses other kinds; a kind added to gate_kinds() needs its branch here
    throw Error(cat("make_gate: no module for the gate kind '", config.kind, "'"));
  return Gate(g);
}

Linear default_linear(int64_t in, int64_t out) {
  Linear l(in, out, true);
  torch::NoGradGuard ng;
  const double b = 1.0 / std::sqrt(static_cast<double>(in));
  l->weight.uniform_(-b, b);
  l->bias.uniform_(-b, b);
  return l;
}

void add_average_weight(LinearImpl& l, double head_weight, double vlm_weight) {
  const int64_t c = l.out_features();
  const torch::Tensor eye = torch::eye(c);
  l.weight.narrow(1, 0, c).add_(eye * vlm_weight);
  l.weight.narrow(1, c, c).add_(eye * head_weight);
}

std::shared_ptr<GateImpl> GateImpl::from_pretrained(const std::string& path,
                                                    nlohmann::json* metadata) {
  const SavedModule saved = SavedModule::open(path, "gate.safetensors", "emovlm.gate");
  Gate g = make_gate(saved.config<GateConfig>());
  saved.load_into(*g);
  if (metadata) *metadata = saved.metadata;
  return g.ptr();
}

void GateImpl::save_pretrained(const std::string& path, const nlohmann::json& metadata) const {
  save_weights(*this, path, {{"emovlm.gate", metadata.dump()}});
}

}  // namespace emovlm
