// ViT teacher against the reference fixture: logits, final CLS token, loss and gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/vit.h"
#include "test_util.h"

using namespace emovlm;

namespace {
std::string vdir() {
  return test::ref_path("vit_tiny");
}
double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max() /
          b.to(torch::kFloat64).abs().max())
      .item<double>();
}
}  // namespace

TEST(Vit, LogitsAndClsMatchReference) {
  EMOVLM_NEED_FIXTURE("vit_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("vit_tiny/expected.safetensors");
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
  EMOVLM_NEED_FIXTURE("vit_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("vit_tiny/expected.safetensors");
  json cases = read_json_file(vdir() + "/cases.json");
  auto exp = load_tensors(vdir() + "/expected.safetensors");
  VitForImageClassification m(VitForImageClassificationImpl::from_pretrained(vdir()));
  m->train();
  std::vector<torch::Tensor> xs;
  for (const auto& c : cases["images"]) xs.push_back(exp.at(c["pixel_values"].get<std::string>()));
  torch::Tensor y = torch::tensor(cases["train_labels"].get<std::vector<int64_t>>(), torch::kInt64);
  torch::Tensor loss = torch::cross_entropy_loss(m->forward(torch::cat(xs)), y);
  EXPECT_NEAR(loss.item<double>(), cases["train_loss"].get<double>(),
              1e-4 * std::abs(cases["train_loss"].get<double>()));
  loss.backward();
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : m->named_parameters()) params[p.key()] = p.value();
  EXPECT_LT(rel_err(params.at("classifier.weight").grad(), exp.at("train.grad.classifier.weight")),
            1e-4);
  EXPECT_LT(rel_err(params.at("vit.embeddings.patch_embeddings.projection.weight").grad(),
                    exp.at("train.grad.patch_proj.weight")),
            1e-4);
}

namespace {

// PyTorch's bicubic interpolation (align_corners=False, the cubic convolution with A = -0.75,
// source taps clamped to the edge), written out in double along each axis: what Hugging Face's
// ViT does to its position-embedding grid for another input size.
std::vector<double> cubic_weights(double t) {
  const double A = -0.75;
  auto near = [&](double x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };       // |x| <= 1
  auto far = [&](double x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };  // 1 < |x| < 2
  return {far(t + 1), near(t), near(1 - t), far(2 - t)};
}

// grid [n_in, D] along one axis of length n_in -> [n_out, D]
torch::Tensor bicubic_axis(const torch::Tensor& grid, int64_t dim, int64_t n_out) {
  const int64_t n_in = grid.size(dim);
  std::vector<torch::Tensor> rows;
  for (int64_t o = 0; o < n_out; ++o) {
    const double src = (o + 0.5) * (static_cast<double>(n_in) / n_out) - 0.5;
    const int64_t i0 = static_cast<int64_t>(std::floor(src));
    const std::vector<double> w = cubic_weights(src - i0);
    torch::Tensor acc = torch::zeros_like(grid.select(dim, 0));
    for (int k = 0; k < 4; ++k) {
      const int64_t i = std::clamp<int64_t>(i0 - 1 + k, 0, n_in - 1);
      acc = acc + w[k] * grid.select(dim, i);
    }
    rows.push_back(acc);
  }
  return torch::stack(rows, dim);
}

}  // namespace

// Another input size: the position embeddings of the patch grid are interpolated bicubically as
// the reference does (checked against the interpolation written out above, for a larger and a
// smaller grid of another aspect ratio); the class token's is kept.
TEST(Vit, PositionEmbeddingsInterpolatedAsTheReference) {
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  VitForImageClassification m(VitForImageClassificationImpl::from_pretrained(vdir()));
  m->eval();
  const VitConfig& c = m->config();
  const int64_t P = c.patch_size, g0 = c.image_size / c.patch_size;
  std::shared_ptr<VitEmbeddingsImpl> emb;
  for (const auto& item : m->named_modules())
    if (item.key() == "vit.embeddings")
      emb = std::dynamic_pointer_cast<VitEmbeddingsImpl>(item.value());
  ASSERT_TRUE(emb) << "no vit.embeddings module";
  {
    // patch tokens of zero: the embeddings' output is the position embeddings themselves
    torch::NoGradGuard ng;
    for (auto& p : emb->named_parameters())
      if (p.key().find("patch_embeddings") != std::string::npos) p.value().zero_();
  }
  torch::NoGradGuard ng;
  const torch::Tensor pos = emb->position_embeddings.to(torch::kFloat64)[0];  // [1 + g0*g0, D]
  const torch::Tensor grid = pos.narrow(0, 1, g0 * g0).view({g0, g0, -1});    // [g0, g0, D]
  for (auto [gh, gw] : std::vector<std::pair<int64_t, int64_t>>{
           {g0 + 2, g0 + 1}, {std::max<int64_t>(1, g0 - 1), g0 + 3}}) {
    torch::Tensor got = emb->forward(torch::zeros({1, 3, gh * P, gw * P}))[0].to(torch::kFloat64);
    ASSERT_EQ(got.size(0), 1 + gh * gw);
    torch::Tensor want = bicubic_axis(bicubic_axis(grid, 0, gh), 1, gw).reshape({gh * gw, -1});
    const double scale = want.abs().max().item<double>();
    EXPECT_LT((got.narrow(0, 1, gh * gw) - want).abs().max().item<double>(), 1e-6 * scale)
        << gh << "x" << gw;
    EXPECT_LT(
        (got[0] - (pos[0] + emb->cls_token.to(torch::kFloat64)[0][0])).abs().max().item<double>(),
        1e-6 * scale);
  }
}

TEST(Vit, NewClassifierAndOtherSizes) {
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  VitForImageClassification m(VitForImageClassificationImpl::from_pretrained(vdir(), 3, 7));
  EXPECT_EQ(m->classifier->weight.size(0), 3);
  m->eval();
  torch::NoGradGuard ng;
  const int64_t size = m->config().image_size, P = m->config().patch_size;
  // a larger input: more patches, the position embeddings interpolated
  torch::Tensor out = m->forward(torch::randn({2, 3, size + 2 * P, size + 2 * P}));
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  // save / load round trip
  test::TempDir dir;
  m->save_pretrained(dir.path());
  VitForImageClassification back(VitForImageClassificationImpl::from_pretrained(dir.path()));
  back->eval();
  torch::Tensor x = torch::randn({1, 3, size, size});
  EXPECT_TRUE(torch::allclose(m->forward(x), back->forward(x)));
  EXPECT_THROW(m->forward(torch::randn({1, 3, size + P / 2 + 1, size})),
               Error);  // not a multiple of the patch
}
