// The libtorch compatibility layer: attention agrees with the plain math on every path.
#include <gtest/gtest.h>

#include "emovlm/core/torch_compat.h"

using namespace emovlm;

namespace {

torch::Tensor reference_attention(const torch::Tensor& q, const torch::Tensor& k,
                                  const torch::Tensor& v, const torch::Tensor& keep) {
  torch::Tensor s = torch::matmul(q.to(torch::kFloat64), k.to(torch::kFloat64).transpose(-2, -1)) /
                    std::sqrt(q.size(-1));
  s = s.masked_fill(keep.logical_not(), -1e300);
  return torch::matmul(torch::softmax(s, -1), v.to(torch::kFloat64)).to(torch::kFloat32);
}

}  // namespace

TEST(TorchCompat, AttentionMatchesMath) {
  torch::manual_seed(0);
  auto q = torch::randn({2, 3, 5, 8}), k = torch::randn({2, 3, 7, 8}),
       v = torch::randn({2, 3, 7, 8});
  auto all = torch::ones({5, 7}, torch::kBool);
  auto ref = reference_attention(q, k, v, all);
  EXPECT_LT((compat::scaled_dot_product_attention(q, k, v) - ref).abs().max().item<double>(), 1e-5);
  EXPECT_LT(
      (compat::scaled_dot_product_attention(q, k, v, c10::nullopt, false, c10::nullopt, true) - ref)
          .abs()
          .max()
          .item<double>(),
      1e-5);
}

TEST(TorchCompat, CausalAndMasks) {
  torch::manual_seed(1);
  auto q = torch::randn({1, 2, 4, 8}), k = torch::randn({1, 2, 6, 8}),
       v = torch::randn({1, 2, 6, 8});
  // causal with more keys than queries: query i sees keys j <= i + (Tk - Tq)
  auto causal = torch::ones({4, 6}, torch::kBool).tril(2);
  auto ref = reference_attention(q, k, v, causal);
  EXPECT_LT((compat::scaled_dot_product_attention(q, k, v, c10::nullopt, true) - ref)
                .abs()
                .max()
                .item<double>(),
            1e-5);
  // boolean padding mask [B, 1, 1, Tk] and the same as an additive mask
  auto keep = torch::tensor({false, true, true, true, true, true}).view({1, 1, 1, 6});
  auto ref2 = reference_attention(q, k, v, keep.expand({1, 2, 4, 6}));
  EXPECT_LT((compat::scaled_dot_product_attention(q, k, v, keep) - ref2).abs().max().item<double>(),
            1e-5);
  auto additive = torch::zeros({1, 1, 1, 6}).masked_fill(keep.logical_not(), -1e9);
  EXPECT_LT(
      (compat::scaled_dot_product_attention(q, k, v, additive) - ref2).abs().max().item<double>(),
      1e-5);
  // causal and a mask together
  auto both = causal.view({1, 1, 4, 6}).logical_and(keep);
  auto ref3 = reference_attention(q, k, v, both.expand({1, 2, 4, 6}));
  EXPECT_LT(
      (compat::scaled_dot_product_attention(q, k, v, keep, true) - ref3).abs().max().item<double>(),
      1e-5);
}

TEST(TorchCompat, Bf16Attention) {
  torch::manual_seed(2);
  auto q = torch::randn({1, 2, 4, 16}), k = torch::randn({1, 2, 4, 16}),
       v = torch::randn({1, 2, 4, 16});
  auto ref = reference_attention(q, k, v, torch::ones({4, 4}, torch::kBool));
  auto out = compat::scaled_dot_product_attention(q.to(torch::kBFloat16), k.to(torch::kBFloat16),
                                                  v.to(torch::kBFloat16));
  EXPECT_EQ(out.scalar_type(), torch::kBFloat16);
  EXPECT_LT((out.to(torch::kFloat32) - ref).abs().max().item<double>(), 5e-2);
}

TEST(TorchCompat, BlockedQueriesMatchWhole) {
  torch::manual_seed(3);
  // more than one block of queries, with causal alignment and a per-query mask
  auto q = torch::randn({1, 1, 2600, 8}), k = torch::randn({1, 1, 2700, 8}),
       v = torch::randn({1, 1, 2700, 8});
  auto keep = torch::rand({1, 1, 2600, 2700}) > 0.3;
  keep =
      keep |
      torch::eye(2600, 2700, torch::kBool).roll(100, 1).view({1, 1, 2600, 2700});  // no empty row
  auto causal = torch::ones({2600, 2700}, torch::kBool).tril(100);
  auto ref = reference_attention(q, k, v, causal.view({1, 1, 2600, 2700}) & keep);
  auto out = compat::scaled_dot_product_attention(q, k, v, keep, true, c10::nullopt, true);
  EXPECT_LT((out - ref).abs().max().item<double>(), 1e-5);
}

TEST(TorchCompat, AutocastGuardScopesBf16Matmuls) {
  torch::nn::Linear l(8, 8);
  torch::Tensor x = torch::randn({2, 8});
  {
    compat::AutocastGuard g(torch::kCPU, torch::kBFloat16);
    EXPECT_TRUE(compat::AutocastGuard::is_enabled(torch::kCPU));
    EXPECT_EQ(l(x).scalar_type(), torch::kBFloat16);
    {
      compat::AutocastGuard off(torch::kCPU, torch::kBFloat16, /*enabled=*/false);  // a no-op
      EXPECT_EQ(l(x).scalar_type(), torch::kBFloat16);
    }
  }
  EXPECT_FALSE(compat::AutocastGuard::is_enabled(torch::kCPU));
  EXPECT_EQ(l(x).scalar_type(), torch::kFloat32);
}

// Float64 inputs: the attention weights are computed and rounded in float32, then applied in
// float64, as the reference's eager attention does in a float64 model
// (softmax(scores, dtype=float32).to(query.dtype)).
TEST(TorchCompat, Float64AttentionWeightsInFloat32) {
  torch::manual_seed(3);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({1, 2, 6, 8}, f64), k = torch::randn({1, 2, 6, 8}, f64),
       v = torch::randn({1, 2, 6, 8}, f64);
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(8.0);
  torch::Tensor want =
      torch::matmul(torch::softmax(scores.to(torch::kFloat32), -1).to(torch::kFloat64), v);
  torch::Tensor all64 = torch::matmul(torch::softmax(scores, -1), v);
  torch::Tensor got = compat::scaled_dot_product_attention(q, k, v);
  EXPECT_EQ(got.scalar_type(), torch::kFloat64);
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-12);
  EXPECT_GT((got - all64).abs().max().item<double>(), 1e-10);  // float32 weights show
}
