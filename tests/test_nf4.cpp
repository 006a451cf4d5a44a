// NF4: exact dequantization to bitsandbytes' level times the block's absmax, double quantization
// against bitsandbytes' algorithm (tests/data/nf4), the error budget on normal data, and the
// quantized Linear.
#include <gtest/gtest.h>

#include <cmath>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/nf4.h"
#include "test_util.h"

using namespace emovlm;

namespace {
// bitsandbytes' dQuantizeNF4 decision thresholds, as its CUDA kernel writes them
const float kThresholds[15] = {-0.8480964004993439f,   -0.6106329262256622f,  -0.4599952697753906f,
                               -0.33967943489551544f,  -0.23460740596055984f, -0.13791173323988914f,
                               -0.045525018125772476f, 0.03979014977812767f,  0.1202552504837513f,
                               0.2035212516784668f,    0.2920137718319893f,   0.3893125355243683f,
                               0.5016634166240692f,    0.6427869200706482f,   0.8614784181118011f};

std::vector<float> floats(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kFloat32).contiguous().reshape({-1});
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}
}  // namespace

TEST(NF4, DequantizesToNearestLevelTimesAbsmax) {
  torch::manual_seed(0);
  torch::Tensor w =
      torch::randn({37, 70}) * 3;  // 2590 values: a partial last block and an odd count
  w[5][7] = 0;
  // block 0 (the first 64 values of row 0): absmax 16 and the thresholds times it, so that the
  // normalised values sit exactly on the thresholds (they take the lower level)
  w[0][15] = 16.0f;
  for (int k = 0; k < 15; ++k) w[0][k] = kThresholds[k] * 16.0f;
  NF4Tensor q = nf4_quantize(w, 64);
  torch::Tensor got = q.dequantize();
  ASSERT_EQ(got.sizes(), w.sizes());
  // independent computation, element by element: times the float32 reciprocal of the absmax,
  // then the kernel's thresholds (x > t; a value on a threshold takes the lower level)
  const auto& cb = nf4_codebook();
  for (int k = 0; k < 15; ++k) EXPECT_EQ(nf4_thresholds()[k], kThresholds[k]) << k;
  auto flat = w.reshape({-1}).contiguous();
  const float* x = flat.data_ptr<float>();
  const int64_t n = flat.numel();
  torch::Tensor want = torch::empty({n});
  for (int64_t b = 0; b < n; b += 64) {
    float amax = 0;
    for (int64_t i = b; i < std::min(n, b + 64); ++i) amax = std::max(amax, std::fabs(x[i]));
    const float inv = 1.0f / amax;
    for (int64_t i = b; i < std::min(n, b + 64); ++i) {
      const float v = x[i] * inv;
      int code = 0;
      while (code < 15 && v > kThresholds[code]) ++code;
      want[i] = cb[code] * amax;
    }
  }
  EXPECT_TRUE(torch::equal(got.reshape({-1}), want));
  EXPECT_EQ(q.bytes(), (n + 1) / 2 + 4 * ((n + 63) / 64));
}

// Double quantization against bitsandbytes' algorithm: tests/data/nf4/make_fixture.py implements
// its quantize_4bit(compress_statistics=True) (bitsandbytes itself is not packaged here) on a
// weight whose rows span three decades, with an all-zero block and the NF4 thresholds themselves.
TEST(NF4, DoubleQuantizationAsBitsandbytes) {
  auto f = load_tensors(std::string(EMOVLM_TEST_DATA_DIR) + "/nf4/double_quant.safetensors");
  const auto& map = dynamic_map();
  torch::Tensor want_map = f.at("dynamic_map");
  ASSERT_EQ(want_map.numel(), 256);
  for (int i = 0; i < 256; ++i)
    EXPECT_EQ(map[i], want_map[i].item<float>()) << "dynamic map entry " << i;
  NF4Tensor q = nf4_quantize(f.at("weight"), 64, /*double_quant=*/true);
  EXPECT_TRUE(torch::equal(q.codes, f.at("codes")));
  EXPECT_TRUE(torch::equal(q.absmax_q, f.at("absmax_q")));
  EXPECT_TRUE(torch::equal(q.absmax2, f.at("absmax2")));
  // the offset is a float32 mean summed in another order than bitsandbytes' (and the fixture's):
  // its last bit may differ, and with it the dequantized values' last bits
  const float offset = f.at("offset").item<float>();
  EXPECT_NEAR(q.absmax_offset, offset, 2 * (std::nextafter(offset, 1e9f) - offset));
  // the dequantized absmax and weight to float rounding: four float32 ulps of the largest value
  const double tol = std::ldexp(1.0, -22);
  EXPECT_LT(test::max_rel_diff(floats(q.block_absmax()), floats(f.at("absmax"))), tol);
  EXPECT_LT(test::max_rel_diff(floats(q.dequantize()), floats(f.at("dequantized"))), tol);
  EXPECT_EQ(q.dequantize().sizes(), f.at("weight").sizes());
  EXPECT_EQ(q.bytes(), q.codes.numel() + q.absmax_q.numel() + 4 * q.absmax2.numel() + 4);
}

// The binary search of bitsandbytes' 8-bit kernel: the nearer bracketing entry of the sorted map
// for values between entries, the entry itself on an entry, and the ends for -1 and 1.
TEST(NF4, DynamicQuantizeSearchesTheSortedMap) {
  const auto& m = dynamic_map();
  torch::Tensor map =
      torch::from_blob(const_cast<float*>(m.data()), {256}, torch::kFloat32).clone();
  for (int i = 1; i < 256; ++i) ASSERT_LT(m[i - 1], m[i]) << i;
  EXPECT_EQ(m[127], 0.0f);
  EXPECT_EQ(m[255], 1.0f);
  std::vector<float> xs;
  std::vector<int> want;
  for (int i = 0; i < 256; ++i) {
    xs.push_back(m[i]), want.push_back(i);
    if (i + 1 < 256) {
      const float a = m[i], b = m[i + 1], gap = b - a;
      xs.push_back(a + 0.25f * gap), want.push_back(i);  // nearer to a
      xs.push_back(a + 0.75f * gap), want.push_back(i + 1);
    }
  }
  torch::Tensor got = dynamic_quantize(torch::tensor(xs), map);
  for (size_t k = 0; k < xs.size(); ++k)
    EXPECT_EQ(got[static_cast<int64_t>(k)].item<int>(), want[k]) << "x = " << xs[k];
}

TEST(NF4, ErrorOnNormalDataAndDoubleQuantization) {
  torch::manual_seed(1);
  torch::Tensor w = torch::randn({1 << 20});
  const double rms = w.pow(2).mean().sqrt().item<double>();
  NF4Tensor q = nf4_quantize(w, 64);
  const double err = (q.dequantize() - w).pow(2).mean().sqrt().item<double>() / rms;
  EXPECT_LT(err, 0.095);
  EXPECT_GT(err, 0.08);  // the codebook's own error (about 0.092): not a degenerate quantizer
  NF4Tensor dq = nf4_quantize(w, 64, /*double_quant=*/true);
  const double err2 = (dq.dequantize() - w).pow(2).mean().sqrt().item<double>() / rms;
  EXPECT_LT(err2, err * 1.01);
  EXPECT_LT(dq.bytes(), q.bytes());
  std::printf("NF4 relative RMS error %.5f, with double quantization %.5f; bytes %lld vs %lld\n",
              err, err2, static_cast<long long>(q.bytes()), static_cast<long long>(dq.bytes()));
}

TEST(NF4, QuantizedLinearUsesTheDequantizedWeight) {
  torch::manual_seed(2);
  Linear l(64, 32, true);
  init_random(*l, 3, 0.5);
  torch::Tensor w = l->weight.detach().clone();
  torch::Tensor x = torch::randn({4, 64});
  l->quantize_nf4(false);
  EXPECT_EQ(l->weight.numel(), 0);
  torch::Tensor want = torch::nn::functional::linear(x, nf4_quantize(w).dequantize(), l->bias);
  EXPECT_TRUE(torch::allclose(l->forward(x), want));
  // QLoRA: an adapter on top of the 4-bit base trains
  l->add_lora(4, 1.0, 0.0);
  l->forward(x).sum().backward();
  EXPECT_TRUE(l->lora_B.grad().defined());
  EXPECT_FALSE(l->weight.requires_grad());
}

// nf4_linear's gradients equal those of a linear layer over the dequantized weight.
TEST(NF4, LinearBackwardDequantizesAgain) {
  torch::manual_seed(4);
  auto w = std::make_shared<const NF4Tensor>(nf4_quantize(torch::randn({6, 10}), 64, true));
  torch::Tensor x = torch::randn({3, 10}, torch::TensorOptions().requires_grad(true));
  torch::Tensor y = nf4_linear(x, w);
  torch::Tensor dense = w->dequantize();
  torch::Tensor x2 = x.detach().clone().requires_grad_(true);
  torch::Tensor y2 = torch::nn::functional::linear(x2, dense);
  EXPECT_TRUE(torch::allclose(y, y2, 1e-6, 1e-6));
  torch::Tensor g = torch::randn({3, 6});
  y.backward(g);
  y2.backward(g);
  EXPECT_TRUE(torch::allclose(x.grad(), x2.grad(), 1e-6, 1e-6));
  EXPECT_THROW(nf4_linear(torch::randn({2, 9}), w), Error);
}
