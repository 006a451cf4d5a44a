// NF4: exact dequantization to the nearest level times the block's absmax, the error budget on
// normal data, double quantization, and the quantized Linear.
#include <gtest/gtest.h>

#include "emovlm/core/error.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/nf4.h"

using namespace emovlm;

TEST(NF4, DequantizesToNearestLevelTimesAbsmax) {
  torch::manual_seed(0);
  torch::Tensor w = torch::randn({37, 70}) * 3;  // 2590 values: a partial last block and an odd count
  w[5][7] = 0;
  NF4Tensor q = nf4_quantize(w, 64);
  torch::Tensor got = q.dequantize();
  ASSERT_EQ(got.sizes(), w.sizes());
  // independent computation, element by element
  const auto& cb = nf4_codebook();
  auto flat = w.reshape({-1}).contiguous();
  const float* x = flat.data_ptr<float>();
  const int64_t n = flat.numel();
  torch::Tensor want = torch::empty({n});
  for (int64_t b = 0; b < n; b += 64) {
    float amax = 0;
    for (int64_t i = b; i < std::min(n, b + 64); ++i) amax = std::max(amax, std::fabs(x[i]));
    for (int64_t i = b; i < std::min(n, b + 64); ++i) {
      const float v = amax > 0 ? x[i] / amax : 0.0f;
      int best = 0;
      for (int k = 1; k < 16; ++k)
        if (std::fabs(v - cb[k]) < std::fabs(v - cb[best])) best = k;
      want[i] = cb[best] * amax;
    }
  }
  EXPECT_TRUE(torch::equal(got.reshape({-1}), want));
  EXPECT_EQ(q.bytes(), (n + 1) / 2 + 4 * ((n + 63) / 64));
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
  std::printf("NF4 relative RMS error %.5f, with double quantization %.5f; bytes %lld vs %lld\n", err, err2,
              static_cast<long long>(q.bytes()), static_cast<long long>(dq.bytes()));
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
