// NF4 quantization as bitsandbytes does it.
#include "emovlm/models/nf4.h"

#include <algorithm>
#include <cmath>

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

const std::array<float, 15>& nf4_thresholds() {
  // bitsandbytes' decision constants (about the midpoints of neighbouring levels), as float
  // literals: the compiler rounds each decimal once to float32, as nvcc does for the kernel. Four
  // of them lie within a double's precision of a float32 midpoint, so reading them through a
  // double would give the other neighbour.
  static const std::array<float, 15> t = {
      -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
      -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
      0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
      0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f};
  return t;
}

const std::array<float, 256>& dynamic_map() {
  static const std::array<float, 256> m = [] {
    // torch's float32 linspace and products, as bitsandbytes builds it
    std::vector<float> data;
    for (int i = 0; i < 7; ++i) {
      torch::Tensor bounds = torch::linspace(0.1, 1.0, (1 << i) + 1, torch::kFloat32);
      torch::Tensor means = (bounds.narrow(0, 0, 1 << i) + bounds.narrow(0, 1, 1 << i)) / 2.0;
      const double scale = std::pow(10.0, i - 6);
      for (const torch::Tensor& t : {means * scale, means * -scale})
        data.insert(data.end(), t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
    }
    data.push_back(0.0f);
    data.push_back(1.0f);
    if (data.size() != 256) throw Error(cat("nf4: the dynamic map has ", data.size(), " entries"));
    std::sort(data.begin(), data.end());
    std::array<float, 256> out{};
    std::copy(data.begin(), data.end(), out.begin());
    return out;
  }();
  return m;
}

namespace {

torch::Tensor float_tensor(const float* v, int64_t n, torch::Device device) {
  return torch::from_blob(const_cast<float*>(v), {n}, torch::kFloat32).clone().to(device);
}

torch::Tensor codebook_tensor(torch::Device device) {
  return float_tensor(nf4_codebook().data(), 16, device);
}

// [256, 2]: byte b holds the codes b >> 4 (first) and b & 15
torch::Tensor byte_level_table(torch::Device device) {
  torch::Tensor table = codebook_tensor(device);
  torch::Tensor byte =
      torch::arange(256, torch::TensorOptions().dtype(torch::kInt64).device(device));
  return torch::stack({table.index_select(0, byte.bitwise_right_shift(4)),
                       table.index_select(0, byte.bitwise_and(15))},
                      1);
}

// The NF4 code of each value of x (float32, normalised): how many thresholds lie below it, so an
// exact threshold takes the lower code and NaN code 0, as the kernel's decision tree.
torch::Tensor nf4_codes(const torch::Tensor& x) {
  torch::Tensor t = float_tensor(nf4_thresholds().data(), 15, x.device());
  // [values, 1] > [15] -> [values, 15] -> count
  return (x.unsqueeze(-1) > t).sum(-1).to(torch::kUInt8);
}

}  // namespace

torch::Tensor dynamic_quantize(const torch::Tensor& x, const torch::Tensor& map) {
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(x.device());
  torch::Tensor pivot = torch::full(x.sizes(), 127, opts),
                upper_p = torch::full(x.sizes(), 255, opts),
                lower_p = torch::zeros(x.sizes(), opts);
  torch::Tensor lower = torch::full_like(x, -1.0), upper = torch::full_like(x, 1.0);
  torch::Tensor val = map.index_select(0, pivot.reshape({-1})).view(x.sizes());
  for (int64_t step = 64; step > 0; step >>= 1) {
    torch::Tensor gt = x > val;
    lower_p = torch::where(gt, pivot, lower_p);
    lower = torch::where(gt, val, lower);
    upper_p = torch::where(gt, upper_p, pivot);
    upper = torch::where(gt, upper, val);
    pivot = torch::where(gt, pivot + step, pivot - step);
    val = map.index_select(0, pivot.reshape({-1})).view(x.sizes());
  }
  upper = torch::where(upper_p == 255, map[255], upper);
  lower = torch::where(lower_p == 0, map[0], lower);
  torch::Tensor gt = x > val;
  torch::Tensor above = torch::where(x > (upper + val) * 0.5, upper_p, pivot);
  torch::Tensor below = torch::where(x < (lower + val) * 0.5, lower_p, pivot);
  return torch::where(gt, above, below).to(torch::kUInt8);
}

int64_t NF4Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

torch::Tensor NF4Tensor::block_absmax() const {
  if (!double_quant) return absmax;
  const int64_t nb = absmax_q.size(0);
  // [groups] -> [groups, dq_block] -> [blocks] (an expand: no host sync, so a CUDA graph can record
  // it)
  const int64_t groups = absmax2.size(0);
  torch::Tensor scale =
      absmax2.view({groups, 1}).expand({groups, dq_block}).reshape({-1}).narrow(0, 0, nb);
  const torch::Tensor table = map.defined() && map.device() == absmax_q.device()
                                  ? map
                                  : float_tensor(dynamic_map().data(), 256, absmax_q.device());
  // two float32 roundings, as bitsandbytes: the map entry times the group's scale, then the offset
  return table.index_select(0, absmax_q.to(torch::kInt32)) * scale + absmax_offset;
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
    out.narrow(0, 0, whole * block)
        .view({whole, block})
        .copy_(values.narrow(0, 0, whole * block).view({whole, block}) *
               scale.narrow(0, 0, whole).unsqueeze(1));
  if (n > whole * block)
    out.narrow(0, whole * block, n - whole * block)
        .copy_(values.narrow(0, whole * block, n - whole * block) * scale[whole]);
  return out.view(shape);
}

int64_t NF4Tensor::bytes() const {
  int64_t b = codes.numel();
  if (double_quant)
    b += absmax_q.numel() + 4 * absmax2.numel() + 4;
  else
    b += 4 * absmax.numel();
  return b;
}

NF4Tensor nf4_quantize(const torch::Tensor& weight, int64_t block, bool double_quant,
                       int64_t dq_block) {
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
  // each value times the float32 reciprocal of its absmax (an all-zero block: 0 * inf = NaN, code
  // 0)
  torch::Tensor inv = 1.0 / absmax;
  q.byte_levels = byte_level_table(w.device());
  // the codes in chunks of 4 M values, so that the [values, 15] comparisons of a 7B MLP matrix
  // (4 GB at once) never exist whole
  torch::Tensor idx = torch::empty({n}, w.options().dtype(torch::kUInt8));
  const int64_t chunk_blocks = std::max<int64_t>(1, (int64_t{1} << 22) / block);
  for (int64_t b0 = 0; b0 < nb; b0 += chunk_blocks) {
    const int64_t nbl = std::min(chunk_blocks, nb - b0);
    // [nbl, block] * [nbl, 1] -> [nbl * block]
    torch::Tensor x =
        (blocks.narrow(0, b0, nbl) * inv.narrow(0, b0, nbl).unsqueeze(1)).reshape({-1});
    const int64_t len = std::min(nbl * block, n - b0 * block);
    idx.narrow(0, b0 * block, len).copy_(nf4_codes(x.narrow(0, 0, len)));
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
  torch::Tensor groups = centred.view({nd, dq_block});  // [groups * dq_block] -> [groups, dq_block]
  q.absmax2 = groups.abs().amax(1).contiguous();
  q.map = float_tensor(dynamic_map().data(), 256, w.device());
  torch::Tensor normed = (groups * (1.0 / q.absmax2).unsqueeze(1)).reshape({-1}).narrow(0, 0, nb);
  q.absmax_q = dynamic_quantize(normed, q.map).contiguous();
  return q;
}

namespace {

struct Nf4Weight : torch::CustomClassHolder {
  std::shared_ptr<const NF4Tensor> w;
};

struct Nf4LinearFunction : torch::autograd::Function<Nf4LinearFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               c10::intrusive_ptr<Nf4Weight> w) {
    ctx->saved_data["w"] = c10::IValue::make_capsule(w);
    return torch::linear(x, w->w->dequantize(x.scalar_type()));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list g) {
    auto w = c10::static_intrusive_pointer_cast<Nf4Weight>(ctx->saved_data["w"].toCapsule());
    // [..., out] x [out, in] -> [..., in]
    return {torch::matmul(g[0], w->w->dequantize(g[0].scalar_type())), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor nf4_linear(const torch::Tensor& x, const std::shared_ptr<const NF4Tensor>& weight) {
  if (x.size(-1) != weight->shape.back())
    throw Error(cat("nf4_linear: input ", shape_str(x.sizes().vec()), " does not fit a weight of ",
                    shape_str(weight->shape)));
  auto holder = c10::make_intrusive<Nf4Weight>();
  holder->w = weight;
  return Nf4LinearFunction::apply(x, holder);
}

int quantize_linears_nf4(torch::nn::Module& root, bool double_quant,
                         const std::function<bool(const std::string&)>& select,
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
