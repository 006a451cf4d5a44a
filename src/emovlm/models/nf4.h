// NF4 quantization of frozen linear weights (QLoRA) as bitsandbytes does it: the 16-level
// normal-float codebook, blocks of 64 with an absmax per block, and optional double quantization
// of the absmax values (bitsandbytes' signed dynamic 8-bit map, blocks of 256, around their mean);
// dequantized on the fly for the matmul.
//
// Storage layout (the fields of bitsandbytes' Params4bit / QuantState, same meaning and order):
// - codes: uint8 [ceil(n / 2)], two 4-bit codes per byte, the first value in the high nibble;
//   code k means the level nf4_codebook()[k]. A value x of a block with absmax a gets the code
//   of x * (1 / a) (the float32 reciprocal, as the kernel) by the decision tree of thresholds
//   nf4_thresholds() (x > t for each): the nearest level, ties and NaN (an all-zero block) going
//   to the lower code, as bitsandbytes' quantize kernel.
// - absmax: float32 [ceil(n / 64)] without double quantization. With it (QuantState.state2):
//   absmax_offset = mean(absmax) (float32), absmax_q uint8 [blocks] the index into
//   dynamic_map() of (absmax - offset) * (1 / absmax2[b / 256]) chosen by the kernel's binary
//   search, absmax2 float32 [ceil(blocks / 256)] the max |absmax - offset| of each group.
// - dequantization: absmax = dynamic_map()[absmax_q] * absmax2 + offset, each product and sum
//   rounded to float32; w = level * absmax (float32), then cast to the compute dtype.
// What differs from bitsandbytes: the mean is torch's (a float32 sum in another order than the
// CUDA kernel's, so the offset may differ in its last bit); the 1 KB dynamic map is shared by all
// tensors (bitsandbytes keeps a copy per quant state); the codes live as a flat uint8 tensor
// (bitsandbytes: [ceil(n / 2), 1]).
#pragma once

#include <torch/torch.h>

#include <array>
#include <vector>

namespace emovlm {

// The QLoRA paper's NF4 levels (quantiles of N(0, 1) scaled to [-1, 1], with an exact zero).
const std::array<float, 16>& nf4_codebook();
// The 15 decision thresholds of bitsandbytes' kernel (about the midpoints of neighbouring levels).
const std::array<float, 15>& nf4_thresholds();
// bitsandbytes' signed dynamic 8-bit map (create_dynamic_map(signed=True)): for exponent
// i = 0..6, the 2^i midpoints of a float32 linspace(0.1, 1, 2^i + 1) times 10^(i - 6), of both
// signs, then 0 and 1; sorted ascending (index 127 is 0, index 255 is 1).
const std::array<float, 256>& dynamic_map();

struct NF4Tensor {
  std::vector<int64_t> shape;
  int64_t block = 64;
  torch::Tensor
      codes;  // uint8 [ceil(numel / 2)]: two 4-bit codes per byte, the first in the high nibble
  torch::Tensor absmax;  // float32 [blocks] (without double quantization)
  bool double_quant = false;
  int64_t dq_block = 256;
  torch::Tensor absmax_q;     // uint8 [blocks]: indices into dynamic_map() (double quantization)
  torch::Tensor absmax2;      // float32 [ceil(blocks / dq_block)]: each group's scale
  float absmax_offset = 0;    // the mean of the absmax values
  torch::Tensor map;          // float32 [256]: dynamic_map() on the codes' device
  torch::Tensor byte_levels;  // float32 [256, 2]: the two levels each code byte holds, on the
                              // codes' device (made once at quantization: dequantizing copies
                              // nothing from the host and rebuilds nothing)

  int64_t numel() const;
  // The absmax of every block (dequantized when double-quantized).
  torch::Tensor block_absmax() const;
  torch::Tensor dequantize(torch::ScalarType dtype = torch::kFloat32) const;
  int64_t bytes() const;  // storage of codes and scales
};

NF4Tensor nf4_quantize(const torch::Tensor& weight, int64_t block = 64, bool double_quant = false,
                       int64_t dq_block = 256);

// The index into a sorted 256-entry map that bitsandbytes' blockwise 8-bit kernel gives each
// value of x (float32, normalised to [-1, 1]): a binary search from entry 127 in steps 64 .. 1,
// then the nearer of the two bracketing entries by their float32 midpoint. uint8, x's shape.
torch::Tensor dynamic_quantize(const torch::Tensor& x, const torch::Tensor& map);

// x W^T for a frozen NF4 weight W [out, in], x [..., in] -> [..., out]. The backward pass
// dequantizes W again for the input's gradient instead of keeping the dense copy: otherwise
// autograd would hold every layer's dequantized weight until backward, the whole base in bf16.
torch::Tensor nf4_linear(const torch::Tensor& x, const std::shared_ptr<const NF4Tensor>& weight);

// Replaces the weight of every Linear under root whose name passes `select` by its NF4 form
// (the dense weight is freed); forward dequantizes it to the compute dtype. Returns the count.
// device: where the NF4 weights go (each dense weight is moved there one at a time and quantized
// there), so a base loaded on the CPU reaches a GPU without ever being there whole in bf16;
// none: where each weight is.
int quantize_linears_nf4(torch::nn::Module& root, bool double_quant,
                         const std::function<bool(const std::string&)>& select,
                         c10::optional<torch::Device> device = c10::nullopt);

}  // namespace emovlm
