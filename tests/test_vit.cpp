// ViT teacher against the reference fixture: logits, final CLS token, loss and gradients.
#include <gtest/gtest.h>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/vit.h"
#include "test_util.h"

using namespace emovlm;

namespace {
std::string vdir() { return test::ref_path("vit_tiny"); }
double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max() / b.to(torch::kFloat64).abs().max()).item<double>();
}
}  // namespace

TEST(Vit, LogitsAndClsMatchReference) {
  json cases = read_json_file(vdir() + "/cases.json");
  auto exp = load_tensors(vdir() + "/expected.safetensors");
  VitConfig cfg = VitConfig::from_dir(vdir());
  VitForImageClassification m(VitForImageClassificationImpl::from_pretrained(vdir()));
  m->eval();
  EXPECT_EQ(m->config().num_labels, cfg.num_labels);
  torch::NoGradGuard ng;
  for (const auto& c : cases["images"]) {
    const std::string name = c["name"];
    torch::Tensor cls;
    torch::Tensor logits = m->forward(exp.at(c["pixel_values"].get<std::string>()), &cls);
    EXPECT_LT(rel_err(logits[0], exp.at(name + ".logits")), 1e-4) << name;
    EXPECT_LT(rel_err(cls[0], exp.at(name + ".cls_final")), 1e-4) << name;
  }
}

TEST(Vit, LossAndGradientsMatchReference) {
  json cases = read_json_file(vdir() + "/cases.json");
  auto exp = load_tensors(vdir() + "/expected.safetensors");
  VitForImageClassification m(VitForImageClassificationImpl::from_pretrained(vdir()));
  m->train();
  std::vector<torch::Tensor> xs;
  for (const auto& c : cases["images"]) xs.push_back(exp.at(c["pixel_values"].get<std::string>()));
  torch::Tensor y = torch::tensor(cases["train_labels"].get<std::vector<int64_t>>(), torch::kInt64);
  torch::Tensor loss = torch::cross_entropy_loss(m->forward(torch::cat(xs)), y);
  EXPECT_NEAR(loss.item<double>(), cases["train_loss"].get<double>(), 1e-4 * std::abs(cases["train_loss"].get<double>()));
  loss.backward();
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : m->named_parameters()) params[p.key()] = p.value();
  EXPECT_LT(rel_err(params.at("classifier.weight").grad(), exp.at("train.grad.classifier.weight")), 1e-4);
  EXPECT_LT(rel_err(params.at("vit.embeddings.patch_embeddings.projection.weight").grad(),
                    exp.at("train.grad.patch_proj.weight")), 1e-4);
}

TEST(Vit, NewClassifierAndInterpolation) {
  VitForImageClassification m(VitForImageClassificationImpl::from_pretrained(vdir(), 3, 7));
  EXPECT_EQ(m->classifier->weight.size(0), 3);
  m->eval();
  torch::NoGradGuard ng;
  // 48x48 input: 36 patches instead of 16, position embeddings interpolated
  torch::Tensor out = m->forward(torch::randn({2, 3, 48, 48}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  // save / load round trip
  test::TempDir dir;
  m->save_pretrained(dir.path());
  VitForImageClassification back(VitForImageClassificationImpl::from_pretrained(dir.path()));
  back->eval();
  torch::Tensor x = torch::randn({1, 3, 32, 32});
  EXPECT_TRUE(torch::allclose(m->forward(x), back->forward(x)));
  EXPECT_THROW(m->forward(torch::randn({1, 3, 30, 30})), Error);
}
