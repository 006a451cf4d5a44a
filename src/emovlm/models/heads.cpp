// Distillation head, KD loss, gates.
#include "emovlm/models/heads.h"

#include <cmath>

#include "emovlm/core/error.h"

namespace emovlm {

namespace {
// PyTorch's default Linear init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
Linear make_linear(int64_t in, int64_t out, bool bias = true) {
  Linear l(in, out, bias);
  torch::NoGradGuard ng;
  const double b = 1.0 / std::sqrt(static_cast<double>(in));
  l->weight.uniform_(-b, b);
  if (bias) l->bias.uniform_(-b, b);
  return l;
}
}  // namespace

DistillHeadImpl::DistillHeadImpl(int64_t in_dim, std::vector<int64_t> hidden, int64_t num_classes,
                                 double dropout)
    : in_(in_dim), classes_(num_classes), hidden_(std::move(hidden)), dropout_(dropout) {
  check(in_dim > 0 && num_classes > 1,
        cat("distillation head: invalid sizes ", in_dim, " -> ", num_classes));
  layers = register_module("layers", torch::nn::ModuleList());
  int64_t prev = in_dim;
  for (int64_t h : hidden_) {
    check(h > 0, "distillation head: hidden sizes must be positive");
    layers->push_back(make_linear(prev, h));
    prev = h;
  }
  layers->push_back(make_linear(prev, num_classes));
}

torch::Tensor DistillHeadImpl::forward(const torch::Tensor& features) {
  torch::Tensor h = features.to(compute_);
  const size_t n = layers->size();
  for (size_t i = 0; i < n; ++i) {
    auto* l = layers[i]->as<LinearImpl>();
    h = compute_ == l->weight.scalar_type()
            ? l->forward(h)
            : torch::linear(h, l->weight.to(compute_), l->bias.to(compute_));
    if (i + 1 < n) h = torch::dropout(torch::gelu(h), dropout_, is_training());
  }
  return h.to(torch::kFloat32);
}

int64_t DistillHeadImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
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

const std::vector<std::string>& gate_kinds() {
  static const std::vector<std::string> k{"concat", "moe", "bilinear", "dynamic", "cross"};
  return k;
}

GateImpl::GateImpl(std::string kind, int64_t C) : kind_(std::move(kind)), c_(C) {
  if (kind_ == "concat") {
    l1 = register_module("fc", make_linear(2 * C, C));
  } else if (kind_ == "moe") {
    experts = register_module("experts", torch::nn::ModuleList());
    for (int i = 0; i < 3; ++i) experts->push_back(make_linear(2 * C, C));
    gate = register_module("gate", make_linear(2 * C, 3));
  } else if (kind_ == "bilinear") {
    const double b = 1.0 / std::sqrt(static_cast<double>(C));
    bilinear = register_module("bilinear", std::make_shared<torch::nn::Module>());
    bil_w = bilinear->register_parameter("weight", torch::empty({C, C, C}).uniform_(-b, b));
    bil_b = bilinear->register_parameter("bias", torch::empty({C}).uniform_(-b, b));
    out = register_module("fc", make_linear(C, C));
  } else if (kind_ == "dynamic") {
    gate = register_module("gate", make_linear(2 * C, 2));
    out = register_module("fc", make_linear(C, C));
  } else if (kind_ == "cross") {
    l1 = register_module("gate_vlm",
                         make_linear(C, C));  // g1 = sigmoid(L(head)) weighs the VLM input
    l2 = register_module("gate_head",
                         make_linear(C, C));  // g2 = sigmoid(L(vlm)) weighs the head input
    out = register_module("fc", make_linear(C, C));
  } else {
    throw Error(cat("unknown gate '", kind_, "' (concat, moe, bilinear, dynamic, cross)"));
  }
}

torch::Tensor GateImpl::forward(const torch::Tensor& vlm, const torch::Tensor& head,
                                torch::Tensor* weights) {
  torch::Tensor v = vlm.to(head.scalar_type());
  torch::Tensor both = torch::cat({v, head}, -1);  // [B, 2C]
  if (kind_ == "concat") return l1(both);
  if (kind_ == "moe") {
    torch::Tensor g = torch::softmax(gate(both), -1);  // [B, 3]
    std::vector<torch::Tensor> outs;
    for (const auto& e : *experts) outs.push_back(e->as<LinearImpl>()->forward(both));
    torch::Tensor e = torch::stack(outs, 1);  // [B, 3, C]
    if (weights) *weights = g;
    return (g.unsqueeze(-1) * e).sum(1);
  }
  if (kind_ == "bilinear") {
    // y_k = v^T W_k h + b_k : [B, C] x [C, C, C] x [B, C] -> [B, C]
    torch::Tensor y = torch::einsum("bi,kij,bj->bk", {v, bil_w, head}) + bil_b;
    return out(y);
  }
  if (kind_ == "dynamic") {
    torch::Tensor w = torch::softmax(gate(both), -1);  // [B, 2]
    if (weights) *weights = w;
    return out(w.narrow(1, 0, 1) * v + w.narrow(1, 1, 1) * head);
  }
  // cross
  torch::Tensor g1 = torch::sigmoid(l1(head)), g2 = torch::sigmoid(l2(v));
  if (weights) *weights = torch::stack({g1.mean(-1), g2.mean(-1)}, 1);
  return out(g1 * v + g2 * head);
}

void GateImpl::init_average(double head_weight, double vlm_weight, double noise) {
  check(std::isfinite(head_weight) && head_weight >= 0 && std::isfinite(vlm_weight) &&
            vlm_weight >= 0,
        cat("gate: the inputs' starting weights must be finite and >= 0, not ", head_weight,
            " and ", vlm_weight));
  torch::NoGradGuard ng;
  for (auto& p : parameters()) p.mul_(noise);  // the default init, scaled down
  const torch::Tensor eye = torch::eye(c_);
  // [C, 2C] weight of a Linear over cat(v, h) giving vlm_weight * v + head_weight * h
  auto add_average = [&](LinearImpl& l) {
    l.weight.narrow(1, 0, c_).add_(eye * vlm_weight);
    l.weight.narrow(1, c_, c_).add_(eye * head_weight);
  };
  // dynamic and cross weigh v and h by shares s and 1 - s before a Linear(C, C) that scales back
  // by the weights' sum; a share of 0 would need a logit of -inf, so each weight is at least 1e-3
  const double wv = std::max(vlm_weight, 1e-3), wh = std::max(head_weight, 1e-3),
               share_v = wv / (wv + wh);
  auto logit = [](double p) { return std::log(p / (1 - p)); };
  if (kind_ == "concat") {
    add_average(*l1);
  } else if (kind_ == "moe") {
    for (auto& e : *experts) add_average(*e->as<LinearImpl>());
  } else if (kind_ == "bilinear") {
    // y_k = sum_ij v_i W_kij h_j with W_kij = head_weight [k == j]: y = head_weight * h * sum(v);
    // fc = I
    for (int64_t k = 0; k < c_; ++k) bil_w[k].select(1, k).add_(head_weight);
    out->weight.add_(eye);
  } else if (kind_ == "dynamic") {
    gate->bias[0].add_(std::log(share_v));  // softmax over (log s, log(1 - s)) = (s, 1 - s)
    gate->bias[1].add_(std::log(1 - share_v));
    out->weight.add_(eye * (wv + wh));
  } else {  // cross: constant gates sigmoid(b) at the start
    l1->bias.add_(logit(share_v));
    l2->bias.add_(logit(1 - share_v));
    out->weight.add_(eye * (wv + wh));
  }
}

int64_t GateImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace emovlm
