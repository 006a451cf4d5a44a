// ResNet (bottleneck) against torchvision 0.14 (tests/data/cnn, made by make_fixtures.py):
// eval-mode logits, the running statistics after a train-mode forward, a training step's loss and
// gradients on a reduced-width model; one full-size ResNet-50 forward; the published checkpoint's
// tensor names and shapes; loading, a new classifier and the save/load round trip in timm's layout.
//
// Tolerances (max |ours - expected| / max |expected|, expected computed in float64): logits and
// running statistics 1e-5, where torchvision's own float32 forward is off by up to 4e-7
// (cases.json: torch_float32_rel_err) and a wrong eps, stride, padding or a missed BatchNorm moves
// them by more than 1e-3; gradients 1e-4, where torchvision's float32 step is off by up to 1e-5
// (torch_float32_grad_rel_err: the batch-statistics backward subtracts nearly equal sums).
#include <gtest/gtest.h>

#include <cmath>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/models/resnet.h"
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

// ---- the full-size fixture's weights: make_fixtures.py's full_size_value, computed the same way
uint32_t fnv1a32(const std::string& s) {
  uint32_t h = 0x811C9DC5u;
  for (unsigned char c : s) h = (h ^ c) * 0x01000193u;
  return h;
}

uint32_t hash32(uint32_t x) {  // the arithmetic wraps mod 2^32, as the script's masks do
  x = ((x >> 16) ^ x) * 0x45D9F3Bu;
  x = ((x >> 16) ^ x) * 0x45D9F3Bu;
  return (x >> 16) ^ x;
}

torch::Tensor full_size_value(const std::string& name, const std::vector<int64_t>& shape) {
  auto ends = [&](const std::string& e) {
    return name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
  };
  if (ends("num_batches_tracked")) return torch::zeros(shape, torch::kInt64);
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  // v = a + b * u in float64 (the script's order of operations), then float32
  double a, b;
  if (shape.size() == 4) {
    b = std::sqrt(12.0 * 2.0 / static_cast<double>(shape[1] * shape[2] * shape[3]));
    a = -0.5;  // (u - 0.5) * b
  } else if (shape.size() == 2) {
    b = std::sqrt(12.0 / static_cast<double>(shape[1]));
    a = -0.5;
  } else if (ends("running_var")) {
    a = 0.75, b = 0.5;
  } else if (ends("bn3.weight")) {
    a = 0.1, b = 0.3;
  } else if (ends("weight")) {
    a = 0.75, b = 0.5;
  } else {
    a = -0.5, b = 0.2;  // 0.2 * (u - 0.5)
  }
  const bool centred = a == -0.5;
  const uint32_t offset = fnv1a32(name);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double u = hash32(static_cast<uint32_t>(i) + offset) / 4294967296.0;
    v[static_cast<size_t>(i)] = static_cast<float>(centred ? (u - 0.5) * b : a + b * u);
  }
  return torch::from_blob(v.data(), shape, torch::kFloat32).clone();
}

}  // namespace

TEST(ResNet, EvalLogitsMatchTorchvision) {
  const std::string dir = cnn("resnet_tiny");
  json cases = read_json_file(dir + "/cases.json");
  auto exp = load_tensors(dir + "/expected.safetensors");
  ResNet m(ResNetImpl::from_pretrained(dir));
  EXPECT_EQ(m->arch(), "resnet50");
  EXPECT_EQ(m->config().layers, (std::vector<int64_t>{1, 2, 1, 1}));
  m->eval();
  torch::NoGradGuard ng;
  for (const auto& in : cases["inputs"]) {
    const std::string name = in;
    torch::Tensor logits = m->forward(exp.at(name));
    ASSERT_EQ(logits.sizes(), exp.at(name + ".logits").sizes()) << name;
    EXPECT_LT(rel_err(logits, exp.at(name + ".logits")), 1e-5) << name;
  }
}

TEST(ResNet, TrainStepMatchesTorchvision) {
  const std::string dir = cnn("resnet_tiny");
  json cases = read_json_file(dir + "/cases.json");
  auto exp = load_tensors(dir + "/expected.safetensors");
  ResNet m(ResNetImpl::from_pretrained(dir));
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
    ASSERT_TRUE(t.at(name).grad().defined()) << name;
    EXPECT_LT(rel_err(t.at(name).grad(), exp.at("train.grad." + name)), 1e-4) << name;
  }
  // the batch's statistics moved the running ones (momentum 0.1, unbiased variance)
  for (const auto& n : cases["bn_names"]) {
    const std::string bn = n;
    for (const char* b : {"running_mean", "running_var"})
      EXPECT_LT(rel_err(t.at(bn + "." + b), exp.at("train." + bn + "." + b)), 1e-5)
          << bn << "." << b;
    EXPECT_EQ(t.at(bn + ".num_batches_tracked").item<int64_t>(),
              cases["num_batches_tracked"][bn].get<int64_t>())
        << bn;
  }
}

TEST(ResNet, FullSizeResNet50MatchesTorchvision) {
  const std::string dir = cnn("resnet50_full");
  json cases = read_json_file(dir + "/cases.json");
  // the weights by name (the loader's names are checked on the published layout and the tiny
  // fixture)
  ResNet m(ResNetConfig::from_dir(dir));
  int64_t tensors = 0;
  {
    torch::NoGradGuard ng;
    for (auto& [name, t] : named(*m)) t.set_data(full_size_value(name, t.sizes().vec())), ++tensors;
  }
  EXPECT_EQ(tensors, cases["tensors"].get<int64_t>());
  EXPECT_EQ(m->num_parameters(), cases["parameters"].get<int64_t>());
  m->eval();
  torch::NoGradGuard ng;
  const std::string px = cases["pixel_values"];  // preprocess/<name>
  auto pre = load_tensors(cnn("preprocess/expected.safetensors"));
  torch::Tensor logits = m->forward(pre.at(px.substr(px.find('/') + 1)).unsqueeze(0));
  EXPECT_LT(rel_err(logits, load_tensors(dir + "/expected.safetensors").at("logits")), 1e-5);
}

TEST(ResNet, PublishedCheckpointLayout) {
  // resnet50.tv_in1k's tensors, names and shapes, as torchvision's resnet50 has them
  json pub = read_json_file(cnn("published.json"))["resnet50"];
  json cfg = {{"architecture", "resnet50"}, {"num_classes", 1000}};
  ResNet m(ResNetConfig::from_json(cfg, "resnet50"));
  auto t = named(*m);
  EXPECT_EQ(t.size(), pub["tensors"].size());
  for (const auto& [name, shape] : pub["tensors"].items()) {
    ASSERT_TRUE(t.count(name)) << name;
    EXPECT_EQ(t.at(name).sizes().vec(), shape.get<std::vector<int64_t>>()) << name;
  }
  EXPECT_EQ(m->num_parameters(), pub["parameters"].get<int64_t>());
}

TEST(ResNet, NewClassifierAndRoundTrip) {
  const std::string dir = cnn("resnet_tiny");
  std::shared_ptr<ImageClassifierImpl> m = load_image_classifier(dir, 3, 7);
  EXPECT_EQ(m->arch(), "resnet50");
  EXPECT_EQ(m->num_labels(), 3);
  auto t = named(*m);
  EXPECT_EQ(t.at("fc.weight").sizes(), (std::vector<int64_t>{3, 512}));
  // torch.nn.Linear's initialisation: U(-1/sqrt(512), 1/sqrt(512)), not the checkpoint's fc
  EXPECT_LE(t.at("fc.weight").abs().max().item<double>(), 1.0 / std::sqrt(512.0));
  EXPECT_GT(t.at("fc.weight").std().item<double>(), 0.5 / std::sqrt(3 * 512.0));
  test::TempDir tmp;
  m->save_pretrained(tmp.path());
  write_classifier_image_config(tmp.path(), classifier_image_config(dir));
  std::shared_ptr<ImageClassifierImpl> back = load_image_classifier(tmp.path());
  EXPECT_EQ(back->num_labels(), 3);
  json saved = read_json_file(tmp / "config.json");
  EXPECT_EQ(saved["architecture"], "resnet50");
  EXPECT_EQ(saved["model_args"]["layers"], json({1, 2, 1, 1}));
  EXPECT_EQ(saved["pretrained_cfg"]["crop_pct"], 0.875);
  m->eval();
  back->eval();
  torch::NoGradGuard ng;
  torch::Tensor x = torch::randn({2, 3, 48, 48});
  EXPECT_TRUE(torch::equal(m->logits(x), back->logits(x)));
  // the running statistics travel with the weights
  EXPECT_TRUE(torch::equal(named(*back).at("layer2.0.downsample.1.running_var"),
                           named(*m).at("layer2.0.downsample.1.running_var")));
}

TEST(ResNet, CheckpointThatDoesNotFitIsNamed) {
  test::TempDir tmp;
  test::copy_tree(cnn("resnet_tiny/model.safetensors"), tmp / "model.safetensors");
  json cfg = read_json_file(cnn("resnet_tiny/config.json"));
  cfg["model_args"]["layers"] = {1, 1, 1, 1};  // the checkpoint has layer2.1
  write_file_atomic(tmp / "config.json", cfg.dump());
  try {
    ResNetImpl::from_pretrained(tmp.path());
    FAIL() << "loaded a checkpoint with an extra block";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(tmp.path()), std::string::npos) << m;
    EXPECT_NE(m.find("unexpected"), std::string::npos) << m;
    EXPECT_NE(m.find("layer2.1.bn1.weight"), std::string::npos) << m;
  }
  cfg["model_args"] = {
      {"layers", {1, 2, 1, 1}}, {"base_width", 8}, {"expansion", 1}, {"stem_type", "deep"}};
  write_file_atomic(tmp / "config.json", cfg.dump());
  EXPECT_THROW(ResNetImpl::from_pretrained(tmp.path()),
               Error);  // an option this project does not build
  cfg["architecture"] = "resnet18";
  write_file_atomic(tmp / "config.json", cfg.dump());
  EXPECT_THROW(classifier_arch(tmp.path()), Error);
}
