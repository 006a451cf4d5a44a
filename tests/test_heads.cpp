// Distillation head (parameter counts of the paper), KD loss against the reference, gates.
#include <gtest/gtest.h>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/heads.h"
#include "test_util.h"

using namespace emovlm;

TEST(DistillHead, ParameterCountsOfThePaper) {
  EXPECT_EQ(DistillHead(3584, std::vector<int64_t>{1024}, 8)->num_parameters(), 3679240);
  EXPECT_EQ(DistillHead(3584, std::vector<int64_t>{1024, 512}, 8)->num_parameters(), 4199944);
  DistillHead h(16, std::vector<int64_t>{8, 4}, 3);
  EXPECT_EQ(h->forward(torch::randn({5, 16})).sizes(), (std::vector<int64_t>{5, 3}));
}

TEST(KDLoss, MatchesReference) {
  EMOVLM_NEED_FIXTURE("heads/cases.json");
  EMOVLM_NEED_FIXTURE("heads/expected.safetensors");
  const std::string dir = test::ref_path("heads");
  json c = read_json_file(dir + "/cases.json")["kd"];
  auto t = load_tensors(dir + "/expected.safetensors");
  torch::Tensor s = t.at("kd.student_logits").to(torch::kFloat64).clone().requires_grad_(true);
  KDLoss l = kd_loss(s, t.at("kd.teacher_logits").to(torch::kFloat64), t.at("kd.labels"),
                     c["T"].get<double>(), c["alpha"].get<double>());
  EXPECT_NEAR(l.kl.item<double>(), c["kl_term"].get<double>(), 1e-6);
  EXPECT_NEAR(l.ce.item<double>(), c["ce_term"].get<double>(), 1e-6);
  EXPECT_NEAR(l.loss.item<double>(), c["loss"].get<double>(), 1e-6);
  l.loss.backward();
  EXPECT_LT((s.grad().to(torch::kFloat32) - t.at("kd.grad_student")).abs().max().item<double>(),
            1e-6);
}

TEST(Gate, ParameterCountsAndShapes) {
  EXPECT_EQ(Gate("concat", 8)->num_parameters(), 136);
  EXPECT_EQ(Gate("moe", 8)->num_parameters(), 3 * 136 + 16 * 3 + 3);
  EXPECT_EQ(Gate("bilinear", 8)->num_parameters(), 8 * 8 * 8 + 8 + 72);
  EXPECT_EQ(Gate("dynamic", 8)->num_parameters(), 16 * 2 + 2 + 72);
  EXPECT_EQ(Gate("cross", 8)->num_parameters(), 3 * 72);
  torch::Tensor v = torch::nn::functional::one_hot(torch::tensor({1, 3, 0}), 8).to(torch::kFloat32);
  torch::Tensor h = torch::randn({3, 8});
  for (const auto& k : gate_kinds()) {
    Gate g(k, 8);
    torch::Tensor w;
    torch::Tensor out = g->forward(v, h, &w);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 8})) << k;
    out.sum().backward();
    for (const auto& p : g->parameters()) EXPECT_TRUE(p.grad().defined()) << k;
  }
  EXPECT_THROW(Gate("nope", 8), Error);
}

// init_average: every gate starts as the weighted sum a * h + b * v of its inputs (bilinear,
// which has no term in v alone: a * h * sum(v)), for one-hot, all-zero (unparsable) and
// distribution VLM inputs.
TEST(Gate, InitAverageStartsAsTheWeightedSumOfTheInputs) {
  torch::manual_seed(0);
  const int64_t C = 6;
  torch::Tensor v =
      torch::cat({torch::nn::functional::one_hot(torch::tensor({1, 4, 0}), C).to(torch::kFloat32),
                  torch::zeros({1, C}), torch::softmax(torch::randn({2, C}), -1)});
  torch::Tensor h = torch::randn({6, C}) * 3;
  for (auto [a, b] : {std::pair<double, double>{0.5, 0.0}, {1.0, 0.7}, {0.3, 2.5}}) {
    for (const auto& k : gate_kinds()) {
      Gate g(k, C);
      g->init_average(a, b, /*noise=*/0.0);
      torch::NoGradGuard ng;
      // dynamic and cross hold each weight at least 1e-3
      const double bb = k == "dynamic" || k == "cross" ? std::max(b, 1e-3) : b;
      torch::Tensor want = k == "bilinear" ? a * h * v.sum(-1, true) : a * h + bb * v;
      EXPECT_TRUE(torch::allclose(g->forward(v, h), want, 1e-5, 1e-5))
          << k << " a=" << a << " b=" << b;
    }
  }
  // with noise the gate is near the average, not equal to it
  Gate g("moe", C);
  g->init_average(0.5, 0.5, 0.05);
  torch::NoGradGuard ng;
  torch::Tensor d = (g->forward(v, h) - 0.5 * (h + v)).abs();
  EXPECT_GT(d.max().item<double>(), 0);
  EXPECT_LT(d.max().item<double>(), 0.5);
  EXPECT_THROW(Gate("concat", C)->init_average(1, -1), Error);
}

TEST(Gate, LearnsToTrustTheRightInput) {
  // the label is the VLM's answer: a concat gate trained briefly follows it
  torch::manual_seed(0);
  Gate g("concat", 4);
  torch::optim::Adam opt(g->parameters(), torch::optim::AdamOptions(0.05));
  torch::Tensor y = torch::randint(0, 4, {64});
  torch::Tensor v = torch::nn::functional::one_hot(y, 4).to(torch::kFloat32);
  torch::Tensor h = torch::randn({64, 4});
  for (int i = 0; i < 200; ++i) {
    opt.zero_grad();
    torch::Tensor loss = torch::cross_entropy_loss(g->forward(v, h), y);
    loss.backward();
    opt.step();
  }
  EXPECT_EQ((g->forward(v, h).argmax(-1) == y).sum().item<int64_t>(), 64);
}
