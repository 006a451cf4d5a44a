// VGG with and without BatchNorm against torchvision 0.14 (tests/data/cnn, made by
// make_fixtures.py): eval-mode logits (the adaptive 7x7 pool from a 4x4 and an 8x6 map), the
// running statistics after a train-mode forward, a training step's loss and gradients, on reduced
// widths; the published vgg16 / vgg16_bn checkpoints' tensor names and shapes (timm's pre_logits
// and head); dropout. Tolerances as in test_resnet.cpp: 1e-5 relative for logits and running
// statistics (torchvision's own float32 forward: under 1e-6, cases.json), 1e-4 for gradients.
#include <gtest/gtest.h>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/models/vgg.h"
#include "test_util.h"

using namespace emovlm;

namespace {

std::string cnn(const std::string& rel) {
  return std::string(EMOVLM_TEST_DATA_DIR) + "/cnn/" + rel;
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max() /
          b.to(torch::kFloat64).abs().max())
      .item<double>();
}

std::map<std::string, torch::Tensor> named(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value();
  for (const auto& b : m.named_buffers()) out[b.key()] = b.value();
  return out;
}

class VggFixture : public ::testing::TestWithParam<const char*> {};

}  // namespace

TEST_P(VggFixture, EvalLogitsMatchTorchvision) {
  const std::string dir = cnn(GetParam());
  json cases = read_json_file(dir + "/cases.json");
  auto exp = load_tensors(dir + "/expected.safetensors");
  Vgg m(VggImpl::from_pretrained(dir));
  m->eval();
  torch::NoGradGuard ng;
  for (const auto& in : cases["inputs"]) {
    const std::string name = in;
    torch::Tensor logits = m->forward(exp.at(name));
    ASSERT_EQ(logits.sizes(), exp.at(name + ".logits").sizes()) << name;
    EXPECT_LT(rel_err(logits, exp.at(name + ".logits")), 1e-5) << name;
  }
}

TEST_P(VggFixture, TrainStepMatchesTorchvision) {
  const std::string dir = cnn(GetParam());
  json cases = read_json_file(dir + "/cases.json");
  auto exp = load_tensors(dir + "/expected.safetensors");
  Vgg m(VggImpl::from_pretrained(dir));
  EXPECT_EQ(m->config().drop_rate,
            0.0);  // the fixture's model_args: dropout masks cannot be compared
  m->train();
  torch::Tensor y = torch::tensor(cases["train_labels"].get<std::vector<int64_t>>(), torch::kInt64);
  torch::Tensor loss =
      torch::cross_entropy_loss(m->forward(exp.at(cases["train_input"].get<std::string>())), y);
  const double expected_loss = cases["train_loss"];
  EXPECT_NEAR(loss.item<double>(), expected_loss, 1e-5 * std::abs(expected_loss));
  loss.backward();
  auto t = named(*m);
  for (const auto& n : cases["grad_names"]) {
    const std::string name = n;
    ASSERT_TRUE(t.count(name)) << name;
    EXPECT_LT(rel_err(t.at(name).grad(), exp.at("train.grad." + name)), 1e-4) << name;
  }
  for (const auto& n : cases.value("bn_names", json::array())) {
    const std::string bn = n;
    for (const char* b : {"running_mean", "running_var"})
      EXPECT_LT(rel_err(t.at(bn + "." + b), exp.at("train." + bn + "." + b)), 1e-5)
          << bn << "." << b;
    EXPECT_EQ(t.at(bn + ".num_batches_tracked").item<int64_t>(),
              cases["num_batches_tracked"][bn].get<int64_t>())
        << bn;
  }
}

INSTANTIATE_TEST_SUITE_P(Vgg, VggFixture, ::testing::Values("vgg_tiny", "vgg_bn_tiny"));

TEST(Vgg, PublishedCheckpointLayouts) {
  json pub = read_json_file(cnn("published.json"));
  for (const char* arch : {"vgg16", "vgg16_bn"}) {
    Vgg m(VggConfig::from_json({{"architecture", arch}, {"num_classes", 1000}}, arch));
    EXPECT_EQ(m->arch(), arch);
    auto t = named(*m);
    const json& tensors = pub[arch]["tensors"];
    EXPECT_EQ(t.size(), tensors.size()) << arch;
    for (const auto& [name, shape] : tensors.items()) {
      ASSERT_TRUE(t.count(name)) << arch << " " << name;
      EXPECT_EQ(t.at(name).sizes().vec(), shape.get<std::vector<int64_t>>()) << arch << " " << name;
    }
    EXPECT_EQ(m->num_parameters(), pub[arch]["parameters"].get<int64_t>()) << arch;
  }
}

TEST(Vgg, DropoutOnlyInTrainModeAndRoundTrip) {
  torch::NoGradGuard ng;
  torch::Tensor x = torch::randn({4, 3, 32, 32});
  {
    // without BatchNorm and with the fixture's drop_rate 0, train mode computes what eval mode does
    Vgg m(VggImpl::from_pretrained(cnn("vgg_tiny")));
    m->train();
    torch::Tensor t = m->forward(x);
    m->eval();
    EXPECT_TRUE(torch::allclose(t, m->forward(x)));
  }
  json cfg = read_json_file(cnn("vgg_tiny/config.json"));
  cfg["model_args"].erase("drop_rate");  // torchvision's 0.5
  test::TempDir tmp;
  test::copy_tree(cnn("vgg_tiny/model.safetensors"), tmp / "model.safetensors");
  write_file_atomic(tmp / "config.json", cfg.dump());
  Vgg m(VggImpl::from_pretrained(tmp.path(), 3, 1));
  EXPECT_EQ(m->config().drop_rate, 0.5);
  EXPECT_EQ(classifier_display_name(m->arch()), "VGG16");
  EXPECT_EQ(classifier_display_name("vgg16_bn"), "VGG16-BN");
  m->eval();
  torch::Tensor a = m->forward(x), b = m->forward(x);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{4, 3}));
  m->train();
  EXPECT_FALSE(torch::allclose(a, m->forward(x)));
  m->eval();
  test::TempDir out;
  m->save_pretrained(out.path());
  json saved = read_json_file(out / "config.json");
  EXPECT_EQ(saved["architecture"], "vgg16");
  EXPECT_EQ(saved["num_classes"], 3);
  EXPECT_FALSE(saved["model_args"].contains("drop_rate"));
  Vgg back(VggImpl::from_pretrained(out.path()));
  back->eval();
  EXPECT_TRUE(torch::equal(back->forward(x), m->forward(x)));
}
