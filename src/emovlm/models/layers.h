// Building blocks shared by the models: Linear (the one place LoRA hooks in), LayerNorm,
// RMSNorm, Conv2d and BatchNorm2d (the CNN teachers), activations, and random initialisation for
// tests and benchmarks. Parameters are allocated uninitialised (torch::empty) so that loading a
// large checkpoint never writes the memory twice: the loader swaps in the mapped tensors.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

namespace emovlm {

struct NF4Tensor;

// y = x W^T + b (+ scaling * B A dropout(x) with a LoRA adapter). weight [out, in], bias [out]
// (optional), lora_A [r, in], lora_B [out, r]. The single place where adapters hook in.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias);
  torch::Tensor forward(const torch::Tensor& x);

  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  // Adds a rank-r adapter (A and B given, or A kaiming-uniform and B zero when undefined), in
  // float32 (float64 over a float64 base).
  void add_lora(int64_t r, double scaling, double dropout, torch::Tensor a = {},
                torch::Tensor b = {});
  bool has_lora() const { return lora_A.defined(); }
  // W += scaling * B A; the adapter is removed.
  void merge_lora();
  // Stores the (frozen) weight as NF4 and frees the dense copy; forward dequantizes it. device:
  // where the NF4 weight goes (the dense one is moved there to be quantized); none: where it is.
  void quantize_nf4(bool double_quant, c10::optional<torch::Device> device = c10::nullopt);
  std::shared_ptr<NF4Tensor> nf4;

  torch::Tensor weight;
  torch::Tensor bias;  // undefined without bias
  torch::Tensor lora_A, lora_B;
  double lora_scaling = 0, lora_dropout = 0;

 private:
  int64_t in_, out_;
};
TORCH_MODULE(Linear);

// Token embedding: weight [vocab, dim].
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t vocab, int64_t dim);
  torch::Tensor forward(const torch::Tensor& ids) { return torch::embedding(weight, ids); }
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias;

 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

// Qwen2's RMSNorm: normalise in float32, scale in the input dtype.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// 2-D convolution as torch.nn.Conv2d (square kernel, stride and zero padding): weight
// [out, in, k, k], bias [out] (optional).
class Conv2dImpl : public torch::nn::Module {
 public:
  Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride = 1,
             int64_t padding = 0, bool bias = true);
  torch::Tensor forward(const torch::Tensor& x);  // [B, in, H, W] -> [B, out, H', W']
  torch::Tensor weight;
  torch::Tensor bias;  // undefined without bias

 private:
  int64_t stride_, padding_;
};
TORCH_MODULE(Conv2d);

// Batch normalisation of [B, C, H, W] as torch.nn.BatchNorm2d: weight and bias [C] (parameters),
// running_mean, running_var [C] and num_batches_tracked (buffers, under the checkpoint's names). In
// train mode the batch's statistics normalise and the running ones move towards them by `momentum`
// (the variance unbiased); in eval mode the running ones normalise.
class BatchNorm2dImpl : public torch::nn::Module {
 public:
  explicit BatchNorm2dImpl(int64_t channels, double eps = 1e-5, double momentum = 0.1);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  double eps_, momentum_;
};
TORCH_MODULE(BatchNorm2d);

torch::Tensor quick_gelu(const torch::Tensor& x);  // x * sigmoid(1.702 x)
torch::Tensor gelu_exact(const torch::Tensor& x);  // erf form
torch::Tensor activation(const std::string& name,
                         const torch::Tensor& x);  // gelu, quick_gelu, silu, gelu_pytorch_tanh

// [..., D]: (-x2, x1) with x1, x2 the halves of the last dimension.
torch::Tensor rotate_half(const torch::Tensor& x);

// Fills every parameter: weights ~ N(0, std), biases ~ N(0, std), norm weights 1 (+ N(0, std) noise
// when noisy_norms), norm biases 0. Deterministic for a seed.
void init_random(torch::nn::Module& module, uint64_t seed, double std = 0.02,
                 bool noisy_norms = false);

}  // namespace emovlm
