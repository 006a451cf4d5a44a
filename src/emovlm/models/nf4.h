// NF4 quantization of frozen linear weights (QLoRA): the 16-level normal-float codebook, blocks of
// 64 with an absmax per block, optional double quantization of the absmax values (8-bit, blocks of
// 256, around their mean), dequantized on the fly for the matmul.
#pragma once

#include <torch/torch.h>

#include <array>
#include <vector>

namespace emovlm {

// The QLoRA paper's NF4 levels (quantiles of N(0, 1) scaled to [-1, 1], with an exact zero).
const std::array<float, 16>& nf4_codebook();

struct NF4Tensor {
  std::vector<int64_t> shape;
  int64_t block = 64;
  torch::Tensor codes;   // uint8 [ceil(numel / 2)]: two 4-bit codes per byte, the first in the high nibble
  torch::Tensor absmax;  // float32 [blocks] (without double quantization)
  bool double_quant = false;
  int64_t dq_block = 256;
  torch::Tensor absmax_q;      // int8 [blocks] (double quantization)
  torch::Tensor absmax_scale;  // float32 [ceil(blocks / dq_block)]
  float absmax_offset = 0;     // the mean of the absmax values
  torch::Tensor byte_levels;   // float32 [256, 2]: the two levels each code byte holds, on the
                               // codes' device (made once at quantization: dequantizing copies
                               // nothing from the host and rebuilds nothing)

  int64_t numel() const;
  // The absmax of every block (dequantized when double-quantized).
  torch::Tensor block_absmax() const;
  torch::Tensor dequantize(torch::ScalarType dtype = torch::kFloat32) const;
  int64_t bytes() const;  // storage of codes and scales
};

NF4Tensor nf4_quantize(const torch::Tensor& weight, int64_t block = 64, bool double_quant = false, int64_t dq_block = 256);

// x W^T for a frozen NF4 weight W [out, in], x [..., in] -> [..., out]. The backward pass
// dequantizes W again for the input's gradient instead of keeping the dense copy: otherwise
// autograd would hold every layer's dequantized weight until backward, the whole base in bf16.
torch::Tensor nf4_linear(const torch::Tensor& x, const std::shared_ptr<const NF4Tensor>& weight);

// Replaces the weight of every Linear under root whose name passes `select` by its NF4 form
// (the dense weight is freed); forward dequantizes it to the compute dtype. Returns the count.
// device: where the NF4 weights go (each dense weight is moved there one at a time and quantized
// there), so a base loaded on the CPU reaches a GPU without ever being there whole in bf16;
// none: where each weight is.
int quantize_linears_nf4(torch::nn::Module& root, bool double_quant, const std::function<bool(const std::string&)>& select,
                         c10::optional<torch::Device> device = c10::nullopt);

}  // namespace emovlm
