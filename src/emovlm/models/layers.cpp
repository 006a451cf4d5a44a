// Shared model building blocks.
#include "emovlm/models/layers.h"

#include <cmath>

#include "emovlm/core/error.h"
#include "emovlm/models/nf4.h"

namespace emovlm {

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias)
    : in_(in_features), out_(out_features) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out_features}));
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y;
  if (nf4) {
    // an NF4 base is dequantized to the input's dtype for the matmul (and again in backward)
    y = nf4_linear(x, nf4);
    if (bias.defined()) y = y + bias.to(y.scalar_type());
  } else {
    // at::linear, as the reference's nn.Linear: one operator (the bias added inside the matmul);
    // the C++ frontend's functional::linear runs matmul, transpose and add apart
    y = torch::linear(x, weight, bias);
  }
  if (lora_A.defined()) {
    torch::Tensor h = lora_dropout > 0 ? torch::dropout(x, lora_dropout, is_training()) : x;
    // [.., in] -> [.., r] -> [.., out]
    y = y + torch::linear(torch::linear(h.to(lora_A.scalar_type()), lora_A), lora_B)
                    .to(y.scalar_type()) *
                lora_scaling;
  }
  return y;
}

void LinearImpl::add_lora(int64_t r, double scaling, double dropout, torch::Tensor a,
                          torch::Tensor b) {
  if (lora_A.defined()) throw Error("add_lora: this layer already has an adapter");
  torch::NoGradGuard ng;
  // float32 adapters over a float32, bf16 or f16 base (PEFT upcasts half-precision adapters),
  // float64 over a float64 one (PEFT gives adapters the base's dtype)
  const auto dtype = weight.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  auto opts = torch::TensorOptions().dtype(dtype).device(weight.device());
  if (!a.defined()) {
    // kaiming_uniform(a = sqrt(5)) as torch.nn.Linear and PEFT: U(-1/sqrt(in), 1/sqrt(in))
    const double bound = 1.0 / std::sqrt(static_cast<double>(in_));
    a = torch::empty({r, in_}, opts).uniform_(-bound, bound);
  }
  if (!b.defined()) b = torch::zeros({out_, r}, opts);
  if (a.sizes() != torch::IntArrayRef({r, in_}) || b.sizes() != torch::IntArrayRef({out_, r}))
    throw Error(cat("LoRA matrices ", shape_str(a.sizes().vec()), " and ",
                    shape_str(b.sizes().vec()), " do not fit a ", in_, " -> ", out_,
                    " layer at rank ", r));
  lora_A = register_parameter("lora_A", a.to(opts).clone());
  lora_B = register_parameter("lora_B", b.to(opts).clone());
  lora_scaling = scaling;
  lora_dropout = dropout;
}

void LinearImpl::quantize_nf4(bool double_quant, c10::optional<torch::Device> device) {
  torch::NoGradGuard ng;
  const torch::Device to = device.value_or(weight.device());
  nf4 = std::make_shared<NF4Tensor>(nf4_quantize(weight.to(to), 64, double_quant));
  weight.set_data(torch::empty({0}, weight.options().device(to)));  // the dense copy is gone
  weight.set_requires_grad(false);
}

void LinearImpl::merge_lora() {
  if (!lora_A.defined()) return;
  if (nf4)
    throw Error("merge_lora: the base weight is NF4; merge into a full-precision base instead");
  torch::NoGradGuard ng;
  torch::Tensor delta =
      torch::matmul(lora_B.to(torch::kFloat32), lora_A.to(torch::kFloat32)) * lora_scaling;
  weight.set_data((weight.to(torch::kFloat32) + delta).to(weight.scalar_type()));
  lora_A = lora_B = torch::Tensor();
  parameters_.erase("lora_A");  // drop the adapter's parameters
  parameters_.erase("lora_B");
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

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = x.to(torch::kFloat32);
  h = h * torch::rsqrt(h.pow(2).mean(-1, true) + eps_);
  return weight * h.to(x.scalar_type());
}

torch::Tensor quick_gelu(const torch::Tensor& x) {
  return x * torch::sigmoid(1.702 * x);
}

torch::Tensor gelu_exact(const torch::Tensor& x) {
  return torch::gelu(x);
}

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

Conv2dImpl::Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride,
                       int64_t padding, bool with_bias)
    : stride_(stride), padding_(padding) {
  weight = register_parameter("weight", torch::empty({out_channels, in_channels, kernel, kernel}));
  if (with_bias) bias = register_parameter("bias", torch::empty({out_channels}));
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) {
  return torch::conv2d(x, weight, bias, {stride_, stride_}, {padding_, padding_});
}

BatchNorm2dImpl::BatchNorm2dImpl(int64_t channels, double eps, double momentum)
    : eps_(eps), momentum_(momentum) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
  running_mean = register_buffer("running_mean", torch::zeros({channels}));
  running_var = register_buffer("running_var", torch::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kInt64));
}

torch::Tensor BatchNorm2dImpl::forward(const torch::Tensor& x) {
  if (is_training()) {
    torch::NoGradGuard ng;
    num_batches_tracked.add_(1);
  }
  // at::batch_norm updates running_mean / running_var in place in train mode
  return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(), momentum_,
                           eps_, at::globalContext().userEnabledCuDNN());
}

void init_random(torch::nn::Module& module, uint64_t seed, double std, bool noisy_norms) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& p : module.named_parameters()) {
    const std::string& n = p.key();
    torch::Tensor t = p.value();
    const bool is_norm = n.find("norm") != std::string::npos ||
                         n.find("ln_") != std::string::npos ||
                         n.find("layernorm") != std::string::npos;
    const bool is_bias = n.size() >= 4 && n.compare(n.size() - 4, 4, "bias") == 0;
    torch::Tensor r =
        at::normal(0.0, std, t.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
    if (is_norm && is_bias)
      t.copy_(noisy_norms ? r : torch::zeros_like(r));
    else if (is_norm)
      t.copy_(noisy_norms ? r + 1.0 : torch::ones_like(r));
    else
      t.copy_(r);
  }
}

}  // namespace emovlm
