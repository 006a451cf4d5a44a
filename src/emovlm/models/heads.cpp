// Distillation head and KD loss.
#include "emovlm/models/heads.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/saved_module.h"
#include "emovlm/models/weights.h"

namespace emovlm {

DistillHeadConfig DistillHeadConfig::from_json(const nlohmann::json& j, const std::string& where) {
  DistillHeadConfig c;
  c.in_dim = json_required<int64_t>(j, "in_dim", where);
  c.hidden = json_required<std::vector<int64_t>>(j, "hidden", where);
  c.num_classes = json_required<int64_t>(j, "num_classes", where);
  c.dropout = json_optional<double>(j, "dropout", c.dropout, where);
  if (j.contains("compute_dtype"))
    c.compute_dtype = parse_compute_dtype(json_required<std::string>(j, "compute_dtype", where),
                                          where + ": compute_dtype");
  return c;
}

void DistillHeadConfig::validate() const {
  constexpr int64_t kMaxWidth = int64_t{1} << 20;
  check_range(in_dim, 1, kMaxWidth, "distillation head: in_dim");
  check_range(static_cast<int64_t>(hidden.size()), 0, 64,
              "distillation head: the number of hidden layers");
  for (size_t i = 0; i < hidden.size(); ++i)
    check_range(hidden[i], 1, kMaxWidth, cat("distillation head: hidden[", i, "]"));
  check_range(num_classes, 2, kMaxWidth, "distillation head: num_classes");
  check(dropout >= 0 && dropout < 1,
        cat("distillation head: dropout ", dropout, " must be in [0, 1)"));
}

nlohmann::json DistillHeadConfig::to_json() const {
  return {{"in_dim", in_dim},
          {"hidden", hidden},
          {"num_classes", num_classes},
          {"dropout", dropout},
          {"compute_dtype", dtype_name(compute_dtype)}};
}

DistillHeadImpl::DistillHeadImpl(const DistillHeadConfig& config) : config_(config) {
  config_.validate();
  compute_ = to_torch(config_.compute_dtype);
  layers = register_module("layers", torch::nn::ModuleList());
  int64_t prev = config_.in_dim;
  for (int64_t h : config_.hidden) {
    layers->push_back(default_linear(prev, h));
    prev = h;
  }
  layers->push_back(default_linear(prev, config_.num_classes));
}

torch::Tensor DistillHeadImpl::forward(const torch::Tensor& features) {
  torch::Tensor h = features.to(compute_);
  const size_t n = layers->size();
  for (size_t i = 0; i < n; ++i) {
    auto* l = layers[i]->as<LinearImpl>();
    h = compute_ == l->weight.scalar_type()
            ? l->forward(h)
            : torch::linear(h, l->weight.to(compute_), l->bias.to(compute_));
    if (i + 1 < n) h = torch::dropout(torch::gelu(h), config_.dropout, is_training());
  }
  return h.to(torch::kFloat32);
}

KDLoss kd_loss(const torch::Tensor& s, const torch::Tensor& t, const torch::Tensor& y, double T,
               double alpha) {
  torch::Tensor log_p_s = torch::log_softmax(s / T, -1);
  torch::Tensor log_p_t = torch::log_softmax(t / T, -1);
  // KL(p_t || p_s) summed over classes, mean over the batch
  torch::Tensor kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * (T * T);
  torch::Tensor ce = torch::nll_loss(torch::log_softmax(s, -1), y);
  return {alpha * kl + (1 - alpha) * ce, kl, ce};
}

std::shared_ptr<DistillHeadImpl> DistillHeadImpl::from_pretrained(const std::string& path,
                                                                  nlohmann::json* metadata) {
  const SavedModule saved = SavedModule::open(path, "head.safetensors", "emovlm.head");
  auto head = std::make_shared<DistillHeadImpl>(saved.config<DistillHeadConfig>());
  saved.load_into(*head);
  if (metadata) *metadata = saved.metadata;
  return head;
}

void DistillHeadImpl::save_pretrained(const std::string& path,
                                      const nlohmann::json& metadata) const {
  save_weights(*this, path, {{"emovlm.head", metadata.dump()}});
}

torch::Tensor head_logits(DistillHeadImpl& head, const torch::Tensor& features) {
  torch::NoGradGuard ng;
  head.eval();
  const torch::Device device = head.layers[0]->as<LinearImpl>()->weight.device();
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < features.size(0); i += 4096) {
    // [N, d] -> rows [<=4096, d] -> [<=4096, C]
    const torch::Tensor rows = features.narrow(0, i, std::min<int64_t>(4096, features.size(0) - i));
    out.push_back(head.forward(rows.to(device)).cpu());
  }
  return torch::cat(out);
}

}  // namespace emovlm
