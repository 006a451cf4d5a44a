// Shared model building blocks.
#include "emovlm/models/layers.h"

#include "emovlm/core/error.h"

namespace emovlm {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias) : in_(in_features), out_(out_features) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out_features}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  return bias.defined() ? torch::nn::functional::linear(x, weight, bias) : torch::nn::functional::linear(x, weight);
}

EmbeddingImpl::EmbeddingImpl(int64_t vocab, int64_t dim) {
  weight = register_parameter("weight", torch::empty({vocab, dim}));
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps) : dim_(dim), eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
  bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  return torch::layer_norm(x, {dim_}, weight, bias, eps_);
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) { weight = register_parameter("weight", torch::ones({dim})); }

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, true) + eps_);
  return weight * h.to(x.scalar_type());
}

torch::Tensor quick_gelu(const torch::Tensor& x) { return x * torch::sigmoid(1.702 * x); }

torch::Tensor gelu_exact(const torch::Tensor& x) { return torch::gelu(x); }

torch::Tensor activation(const std::string& name, const torch::Tensor& x) {
  if (name == "quick_gelu") return quick_gelu(x);
  if (name == "gelu") return torch::gelu(x);
  if (name == "silu" || name == "swish") return torch::silu(x);
  if (name == "gelu_pytorch_tanh" || name == "gelu_new") return torch::gelu(x, "tanh");
  if (name == "relu") return torch::relu(x);
  throw Error(cat("unsupported activation '", name, "'"));
}

torch::Tensor rotate_half(const torch::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, x.size(-1) - half);
  return torch::cat({-x2, x1}, -1);
}

void init_random(torch::nn::Module& module, uint64_t seed, double std, bool noisy_norms) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& p : module.named_parameters()) {
    const std::string& n = p.key();
    torch::Tensor t = p.value();
    const bool is_norm = n.find("norm") != std::string::npos || n.find("ln_") != std::string::npos ||
                         n.find("layernorm") != std::string::npos;
    const bool is_bias = n.size() >= 4 && n.compare(n.size() - 4, 4, "bias") == 0;
    torch::Tensor r = at::normal(0.0, std, t.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
    if (is_norm && is_bias)
      t.copy_(noisy_norms ? r : torch::zeros_like(r));
    else if (is_norm)
      t.copy_(noisy_norms ? r + 1.0 : torch::ones_like(r));
    else
      t.copy_(r);
  }
}

}  // namespace emovlm
