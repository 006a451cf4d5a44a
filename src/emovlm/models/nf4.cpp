// NF4 quantization.
#include "emovlm/models/nf4.h"

#include <algorithm>

#include "emovlm/core/error.h"
#include "emovlm/core/memory.h"
#include "emovlm/models/layers.h"

namespace emovlm {

const std::array<float, 16>& nf4_codebook() {
  static const std::array<float, 16> c = {-1.0f,
                                          -0.6961928009986877f,
                                          -0.5250730514526367f,
                                          -0.39491748809814453f,
                                          -0.28444138169288635f,
                                          -0.18477343022823334f,
                                          -0.09105003625154495f,
                                          0.0f,
                                          0.07958029955625534f,
                                          0.16093020141124725f,
                                          0.24611230194568634f,
                                          0.33791524171829224f,
                                          0.44070982933044434f,
                                          0.5626170039176941f,
                                          0.7229568362236023f,
                                          1.0f};
  return c;
}

namespace {

torch::Tensor codebook_tensor(torch::Device device) {
  return torch::tensor(std::vector<float>(nf4_codebook().begin(), nf4_codebook().end())).to(device);
}

// [256, 2]: byte b holds the codes b >> 4 (first) and b & 15
torch::Tensor byte_level_table(torch::Device device) {
  torch::Tensor table = codebook_tensor(device);
  torch::Tensor byte = torch::arange(256, torch::TensorOptions().dtype(torch::kInt64).device(device));
  return torch::stack({table.index_select(0, byte.bitwise_right_shift(4)), table.index_select(0, byte.bitwise_and(15))}, 1);
}

}  // namespace

int64_t NF4Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

torch::Tensor NF4Tensor::block_absmax() const {
  if (!double_quant) return absmax;
  const int64_t nb = absmax_q.size(0);
  // [groups] -> [groups, dq_block] -> [blocks] (an expand: no host sync, so a CUDA graph can record it)
  const int64_t groups = absmax_scale.size(0);
  torch::Tensor scale = absmax_scale.view({groups, 1}).expand({groups, dq_block}).reshape({-1}).narrow(0, 0, nb);
  return absmax_q.to(torch::kFloat32) * scale + absmax_offset;
}

torch::Tensor NF4Tensor::dequantize(torch::ScalarType dtype) const {
  const int64_t n = numel();
  const torch::Tensor pairs = byte_levels.defined() && byte_levels.device() == codes.device()
                                  ? byte_levels
                                  : byte_level_table(codes.device());
  // each byte to its two levels in one lookup, [bytes] -> [bytes, 2] -> [n] (int32 indices: a
  // quarter of int64's memory)
  torch::Tensor values = pairs.index_select(0, codes.to(torch::kInt32)).view({-1}).narrow(0, 0, n);
  torch::Tensor scale = block_absmax();
  torch::Tensor out = torch::empty({n}, values.options().dtype(dtype));
  const int64_t whole = n / block;  // [whole * block] -> [whole, block] times each block's absmax
  if (whole > 0)
    out.narrow(0, 0, whole * block).view({whole, block}).copy_(
        values.narrow(0, 0, whole * block).view({whole, block}) * scale.narrow(0, 0, whole).unsqueeze(1));
  if (n > whole * block)
    out.narrow(0, whole * block, n - whole * block).copy_(values.narrow(0, whole * block, n - whole * block) * scale[whole]);
  return out.view(shape);
}

int64_t NF4Tensor::bytes() const {
  int64_t b = codes.numel();
  if (double_quant) b += absmax_q.numel() + 4 * absmax_scale.numel() + 4;
  else b += 4 * absmax.numel();
  return b;
}

NF4Tensor nf4_quantize(const torch::Tensor& weight, int64_t block, bool double_quant, int64_t dq_block) {
  if (block <= 0 || dq_block <= 0) throw Error("nf4: block sizes must be positive");
  NF4Tensor q;
  q.shape = weight.sizes().vec();
  q.block = block;
  torch::Tensor w = weight.detach().to(torch::kFloat32).reshape({-1});
  const int64_t n = w.numel(), nb = (n + block - 1) / block;
  torch::Tensor padded = torch::zeros({nb * block}, w.options());
  padded.narrow(0, 0, n).copy_(w);
  torch::Tensor blocks = padded.view({nb, block});  // [n] -> [blocks, block]
  torch::Tensor absmax = blocks.abs().amax(1);
  torch::Tensor safe = torch::where(absmax > 0, absmax, torch::ones_like(absmax));
  torch::Tensor norm = blocks / safe.unsqueeze(1);  // in [-1, 1]
  torch::Tensor table = codebook_tensor(w.device());
  q.byte_levels = byte_level_table(w.device());
  // the nearest level: [values, 1] - [16] -> argmin over the levels, in chunks of 4 M values so
  // that the [values, 16] distances of a 7B MLP matrix (4 GB at once) never exist whole
  torch::Tensor flat = norm.reshape({-1}).narrow(0, 0, n);
  torch::Tensor idx = torch::empty({n}, flat.options().dtype(torch::kUInt8));
  const int64_t chunk = int64_t{1} << 22;
  for (int64_t off = 0; off < n; off += chunk) {
    const int64_t len = std::min(chunk, n - off);
    idx.narrow(0, off, len).copy_((flat.narrow(0, off, len).unsqueeze(-1) - table).abs().argmin(-1));
  }
  if (n % 2) idx = torch::cat({idx, torch::zeros({1}, idx.options())});
  torch::Tensor pairs = idx.view({-1, 2});  // [n/2, 2]
  q.codes = pairs.select(1, 0).bitwise_left_shift(4).bitwise_or(pairs.select(1, 1)).contiguous();
  if (!double_quant) {
    q.absmax = absmax.contiguous();
    return q;
  }
  q.double_quant = true;
  q.dq_block = dq_block;
  q.absmax_offset = absmax.mean().item<float>();
  const int64_t nd = (nb + dq_block - 1) / dq_block;
  torch::Tensor centred = torch::zeros({nd * dq_block}, absmax.options());
  centred.narrow(0, 0, nb).copy_(absmax - q.absmax_offset);
  torch::Tensor cb = centred.view({nd, dq_block});
  torch::Tensor scale = cb.abs().amax(1) / 127.0;
  scale = torch::where(scale > 0, scale, torch::ones_like(scale));
  q.absmax_scale = scale.contiguous();
  q.absmax_q = torch::round(cb / scale.unsqueeze(1)).clamp(-127, 127).to(torch::kInt8).reshape({-1}).narrow(0, 0, nb).contiguous();
  return q;
}

namespace {

struct Nf4Weight : torch::CustomClassHolder {
  std::shared_ptr<const NF4Tensor> w;
};

struct Nf4LinearFunction : torch::autograd::Function<Nf4LinearFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x, c10::intrusive_ptr<Nf4Weight> w) {
    ctx->saved_data["w"] = c10::IValue::make_capsule(w);
    return torch::linear(x, w->w->dequantize(x.scalar_type()));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list g) {
    auto w = c10::static_intrusive_pointer_cast<Nf4Weight>(ctx->saved_data["w"].toCapsule());
    // [..., out] x [out, in] -> [..., in]
    return {torch::matmul(g[0], w->w->dequantize(g[0].scalar_type())), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor nf4_linear(const torch::Tensor& x, const std::shared_ptr<const NF4Tensor>& weight) {
  if (x.size(-1) != weight->shape.back())
    throw Error(cat("nf4_linear: input ", shape_str(x.sizes().vec()), " does not fit a weight of ", shape_str(weight->shape)));
  auto holder = c10::make_intrusive<Nf4Weight>();
  holder->w = weight;
  return Nf4LinearFunction::apply(x, holder);
}

int quantize_linears_nf4(torch::nn::Module& root, bool double_quant, const std::function<bool(const std::string&)>& select,
                         c10::optional<torch::Device> device) {
  int n = 0;
  for (const auto& item : root.named_modules()) {
    auto* lin = dynamic_cast<LinearImpl*>(item.value().get());
    if (!lin || !select(item.key()) || lin->nf4) continue;
    lin->quantize_nf4(double_quant, device);
    ++n;
  }
  // the dense weights and the quantizer's float32 temporaries are freed: give the heap back
  release_free_heap();
  return n;
}

}  // namespace emovlm
