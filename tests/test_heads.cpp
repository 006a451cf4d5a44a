// Distillation head (parameter counts of the paper), KD loss against the reference, gates; their
// configs and the checks on loading their files.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/gates.h"
#include "emovlm/models/heads.h"
#include "emovlm/models/weights.h"
#include "emovlm/train/distill.h"
#include "test_util.h"

using namespace emovlm;

namespace {
DistillHeadConfig head_config(int64_t in_dim, std::vector<int64_t> hidden, int64_t classes) {
  DistillHeadConfig c;
  c.in_dim = in_dim;
  c.hidden = std::move(hidden);
  c.num_classes = classes;
  return c;
}

Gate gate_of(const std::string& kind, int64_t classes) {
  GateConfig c;
  c.kind = kind;
  c.num_classes = classes;
  return make_gate(c);
}

}  // namespace

TEST(DistillHead, ParameterCountsOfThePaper) {
  EXPECT_EQ(count_parameters(*DistillHead(head_config(3584, {1024}, 8))), 3679240);
  EXPECT_EQ(count_parameters(*DistillHead(head_config(3584, {1024, 512}, 8))), 4199944);
  DistillHead h(head_config(16, {8, 4}, 3));
  EXPECT_EQ(h->forward(torch::randn({5, 16})).sizes(), (std::vector<int64_t>{5, 3}));
}

TEST(DistillHead, ConfigReadsWritesAndValidates) {
  const json j = {{"in_dim", 64},   {"hidden", {32, 16}},      {"num_classes", 8},
                  {"dropout", 0.2}, {"compute_dtype", "bf16"}, {"labels", {"a"}}};
  DistillHeadConfig c = DistillHeadConfig::from_json(j, "test");
  EXPECT_EQ(c.in_dim, 64);
  EXPECT_EQ(c.hidden, (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(c.num_classes, 8);
  EXPECT_EQ(c.dropout, 0.2);
  EXPECT_EQ(c.compute_dtype, ComputeDtype::bf16);
  c.validate();
  EXPECT_EQ(DistillHeadConfig::from_json(c.to_json(), "again").to_json(), c.to_json());
  // metadata without the optional keys reads their defaults
  DistillHeadConfig d = DistillHeadConfig::from_json(
      json{{"in_dim", 64}, {"hidden", json::array()}, {"num_classes", 8}}, "old");
  EXPECT_EQ(d.dropout, 0.1);
  EXPECT_EQ(d.compute_dtype, ComputeDtype::f32);
  EXPECT_TRUE(d.hidden.empty());
  struct Case {
    std::function<void(DistillHeadConfig&)> set;
    std::vector<std::string> named;
  };
  const Case cases[] = {{[](DistillHeadConfig& x) { x.in_dim = 0; }, {"in_dim", "0"}},
                        {[](DistillHeadConfig& x) {
                           x.hidden = {8, -2};
                         },
                         {"hidden[1]", "-2"}},
                        {[](DistillHeadConfig& x) { x.num_classes = 1; }, {"num_classes", "1"}},
                        {[](DistillHeadConfig& x) { x.dropout = 1.0; }, {"dropout", "1"}},
                        {[](DistillHeadConfig& x) { x.dropout = -0.1; }, {"dropout", "-0.1"}}};
  for (const auto& k : cases) {
    DistillHeadConfig bad = c;
    k.set(bad);
    test::expect_error_naming([&] { bad.validate(); }, k.named);
    test::expect_error_naming([&] { DistillHead h(bad); }, k.named);
  }
  // a dtype the head cannot compute in is refused where the metadata is read
  json f8 = c.to_json();
  f8["compute_dtype"] = "f8";
  test::expect_error_naming([&] { DistillHeadConfig::from_json(f8, "head.safetensors"); },
                            {"head.safetensors", "compute_dtype", "f8"});
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
  EXPECT_EQ(count_parameters(*gate_of("concat", 8)), 136);
  EXPECT_EQ(count_parameters(*gate_of("moe", 8)), 3 * 136 + 16 * 3 + 3);
  EXPECT_EQ(count_parameters(*gate_of("bilinear", 8)), 8 * 8 * 8 + 8 + 72);
  EXPECT_EQ(count_parameters(*gate_of("dynamic", 8)), 16 * 2 + 2 + 72);
  EXPECT_EQ(count_parameters(*gate_of("cross", 8)), 3 * 72);
  torch::Tensor v = torch::nn::functional::one_hot(torch::tensor({1, 3, 0}), 8).to(torch::kFloat32);
  torch::Tensor h = torch::randn({3, 8});
  for (const auto& k : gate_kinds()) {
    Gate g = gate_of(k, 8);
    EXPECT_EQ(g->kind(), k);
    torch::Tensor w;
    torch::Tensor out = g->forward(v, h, &w);
    EXPECT_EQ(out.sizes(), (std::vector<int64_t>{3, 8})) << k;
    out.sum().backward();
    for (const auto& p : g->parameters()) EXPECT_TRUE(p.grad().defined()) << k;
  }
  EXPECT_THROW(gate_of("nope", 8), Error);
}

// The tensors of each kind, in order, under the names gate checkpoints hold.
TEST(Gate, TensorNamesAreTheCheckpointKeys) {
  const int64_t C = 4;
  using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;
  const std::map<std::string, Shapes> want = {
      {"concat", {{"fc.weight", {C, 2 * C}}, {"fc.bias", {C}}}},
      {"moe",
       {{"experts.0.weight", {C, 2 * C}},
        {"experts.0.bias", {C}},
        {"experts.1.weight", {C, 2 * C}},
        {"experts.1.bias", {C}},
        {"experts.2.weight", {C, 2 * C}},
        {"experts.2.bias", {C}},
        {"gate.weight", {3, 2 * C}},
        {"gate.bias", {3}}}},
      {"bilinear",
       {{"bilinear.weight", {C, C, C}},
        {"bilinear.bias", {C}},
        {"fc.weight", {C, C}},
        {"fc.bias", {C}}}},
      {"dynamic",
       {{"gate.weight", {2, 2 * C}}, {"gate.bias", {2}}, {"fc.weight", {C, C}}, {"fc.bias", {C}}}},
      {"cross",
       {{"gate_vlm.weight", {C, C}},
        {"gate_vlm.bias", {C}},
        {"gate_head.weight", {C, C}},
        {"gate_head.bias", {C}},
        {"fc.weight", {C, C}},
        {"fc.bias", {C}}}}};
  ASSERT_EQ(want.size(), gate_kinds().size());
  for (const auto& k : gate_kinds()) {
    Shapes got;
    for (const auto& p : gate_of(k, C)->named_parameters())
      got.emplace_back(p.key(), p.value().sizes().vec());
    EXPECT_EQ(got, want.at(k)) << k;
    EXPECT_TRUE(gate_of(k, C)->named_buffers().is_empty()) << k;
  }
}

TEST(Gate, ConfigReadsWritesAndValidates) {
  GateConfig c = GateConfig::from_json(
      json{{"kind", "cross"}, {"num_classes", 6}, {"vlm_input", "onehot"}}, "test");
  EXPECT_EQ(c.kind, "cross");
  EXPECT_EQ(c.num_classes, 6);
  c.validate();
  EXPECT_EQ(c.to_json(), (json{{"kind", "cross"}, {"num_classes", 6}}));
  GateConfig bad = c;
  bad.kind = "mlp";
  test::expect_error_naming([&] { bad.validate(); },
                            {"kind", "'mlp'", "concat", "moe", "bilinear", "dynamic", "cross"});
  test::expect_error_naming([&] { make_gate(bad); }, {"kind", "'mlp'"});
  bad = c;
  bad.num_classes = 1;
  test::expect_error_naming([&] { bad.validate(); }, {"num_classes", "1"});
  test::expect_error_naming(
      [&] {
        GateConfig::from_json(json{{"num_classes", 6}}, "where");
      },
      {"where", "kind"});
}

// A head or gate file with one tensor missing, one of the wrong shape and one the module does not
// have is refused in one error naming the file and all three.
TEST(Gate, LoadingReportsEveryProblemOfTheFile) {
  test::TempDir dir;
  const int64_t C = 4;
  Gate g = gate_of("dynamic", C);
  const std::string gate_path = dir / "gate.safetensors";
  const json gcfg = {{"kind", "dynamic"}, {"num_classes", C}, {"vlm_input", "onehot"}};
  // written as training writes it: loads back equal
  save_weights(*g, gate_path, {{"emovlm.gate", gcfg.dump()}});
  json read_cfg;
  Gate back = GateImpl::from_pretrained(gate_path, &read_cfg);
  EXPECT_EQ(read_cfg, gcfg);
  for (const auto& p : g->named_parameters())
    EXPECT_TRUE(torch::equal(back->named_parameters()[p.key()], p.value())) << p.key();
  NamedTensors ts = {{"gate.weight", torch::zeros({2, 2 * C})},
                     {"fc.weight", torch::zeros({C, C + 1})},
                     {"fc.bias", torch::zeros({C})},
                     {"fc.scale", torch::zeros({C})}};  // gate.bias is missing
  save_tensors(gate_path, ts, {{"emovlm.gate", gcfg.dump()}});
  test::expect_error_naming(
      [&] { GateImpl::from_pretrained(gate_path); },
      {gate_path, "missing 1", "gate.bias", "mis-shaped", "fc.weight", "unexpected 1", "fc.scale"});

  DistillHead h(head_config(8, {6}, C));
  const std::string head_path = dir / "head.safetensors";
  const json hcfg = h->config().to_json();
  save_weights(*h, head_path, {{"emovlm.head", hcfg.dump()}});
  DistillHead hb = DistillHeadImpl::from_pretrained(head_path);
  h->eval();
  torch::Tensor x = torch::randn({3, 8});
  EXPECT_TRUE(torch::equal(hb->forward(x), h->forward(x)));
  ts = {{"layers.0.weight", torch::zeros({6, 8})},
        {"layers.0.bias", torch::zeros({5})},
        {"layers.1.weight", torch::zeros({C, 6})},
        {"layers.2.weight", torch::zeros({C, C})}};  // layers.1.bias is missing
  save_tensors(head_path, ts, {{"emovlm.head", hcfg.dump()}});
  test::expect_error_naming([&] { DistillHeadImpl::from_pretrained(head_path); },
                            {head_path, "missing 1", "layers.1.bias", "mis-shaped", "layers.0.bias",
                             "unexpected 1", "layers.2.weight"});
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
      Gate g = gate_of(k, C);
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
  Gate g = gate_of("moe", C);
  g->init_average(0.5, 0.5, 0.05);
  torch::NoGradGuard ng;
  torch::Tensor d = (g->forward(v, h) - 0.5 * (h + v)).abs();
  EXPECT_GT(d.max().item<double>(), 0);
  EXPECT_LT(d.max().item<double>(), 0.5);
  EXPECT_THROW(gate_of("concat", C)->init_average(1, -1), Error);
}

TEST(Gate, LearnsToTrustTheRightInput) {
  // the label is the VLM's answer: a concat gate trained briefly follows it
  torch::manual_seed(0);
  Gate g = gate_of("concat", 4);
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
