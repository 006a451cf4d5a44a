// Gradient checkpointing: the gradients equal those of the plain forward (with dropout, whose RNG
// state the recomputation restores), also for the Qwen2-VL language model under LoRA.
#include <gtest/gtest.h>

#include <set>

#include "emovlm/core/tensor_io.h"
#include "emovlm/models/grad_checkpoint.h"
#include "emovlm/models/lora.h"
#include "emovlm/train/sft.h"
#include "test_util.h"

using namespace emovlm;

namespace {
// Nodes of t's autograd graph whose name contains `part`.
int count_nodes(const torch::Tensor& t, const std::string& part) {
  std::set<torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> todo;
  if (t.grad_fn()) todo.push_back(t.grad_fn().get());
  int n = 0;
  while (!todo.empty()) {
    torch::autograd::Node* f = todo.back();
    todo.pop_back();
    if (!seen.insert(f).second) continue;
    n += f->name().find(part) != std::string::npos;
    for (const auto& e : f->next_edges())
      if (e.function) todo.push_back(e.function.get());
  }
  return n;
}
}  // namespace

TEST(GradCheckpoint, SameGradientsWithDropout) {
  torch::manual_seed(0);
  torch::nn::Linear a(16, 32), b(32, 16);
  auto block = [&](const torch::Tensor& x) {
    return b(torch::dropout(torch::gelu(a(x)), 0.3, true));
  };
  torch::Tensor x0 = torch::randn({4, 16});

  auto grads = [&](bool recompute) {
    for (auto& p : a->parameters()) p.mutable_grad() = torch::Tensor();
    for (auto& p : b->parameters()) p.mutable_grad() = torch::Tensor();
    torch::manual_seed(7);
    torch::Tensor x = x0.clone().requires_grad_(true);
    torch::Tensor y = recompute ? checkpointed(block, x) : block(x);
    y = recompute ? checkpointed(block, y) : block(y);  // two blocks in a row
    (y * y).sum().backward();
    std::vector<torch::Tensor> g = {x.grad().clone(), y.detach().clone()};
    for (auto& p : a->parameters()) g.push_back(p.grad().clone());
    for (auto& p : b->parameters()) g.push_back(p.grad().clone());
    g.push_back(torch::rand({3}));  // the RNG continues as after the plain forward
    return g;
  };
  std::vector<torch::Tensor> plain = grads(false), ck = grads(true);
  ASSERT_EQ(plain.size(), ck.size());
  for (size_t i = 0; i < plain.size(); ++i)
    EXPECT_TRUE(torch::allclose(plain[i], ck[i], 1e-6, 1e-7)) << i;
}

TEST(GradCheckpoint, InputWithoutGradStillTrainsParameters) {
  torch::nn::Linear a(8, 8);
  torch::Tensor x = torch::randn({2, 8});  // no requires_grad, as frozen embeddings
  checkpointed([&](const torch::Tensor& h) { return a(h); }, x).sum().backward();
  ASSERT_TRUE(a->weight.grad().defined());
  EXPECT_TRUE(torch::allclose(a->weight.grad(), x.sum(0).expand({8, 8})));
}

TEST(GradCheckpoint, NoGradModeIsAPlainCall) {
  torch::nn::Linear a(4, 4);
  torch::NoGradGuard ng;
  EXPECT_FALSE(checkpointed([&](const torch::Tensor& h) { return a(h); }, torch::randn({1, 4}))
                   .requires_grad());
}

// The SFT loss of the tiny Qwen2-VL with LoRA (dropout on): layer gradients with and without
// checkpointing agree.
TEST(GradCheckpoint, Qwen2VLLoraGradientsAgree) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const std::string dir = test::ref_path("qwen2vl_tiny");
  json sft = read_json_file(dir + "/cases.json")["sft"];
  auto expected = load_tensors(dir + "/expected.safetensors");
  json cases = read_json_file(dir + "/cases.json");
  std::vector<int64_t> grid;
  std::string proc = "pil";
  for (const auto& im : cases["images"])
    if (im["name"] == sft["image"]) {
      proc = im.value("reference_processor", proc);
      grid = im["grid_thw." + proc].get<std::vector<int64_t>>();
    }
  ASSERT_EQ(grid.size(), 3u) << "cases.json has no image " << sft["image"];
  torch::Tensor ids =
      torch::tensor(sft["input_ids"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
  torch::Tensor labels =
      torch::tensor(sft["labels"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
  Qwen2VLInputs in{ids,
                   torch::ones_like(ids),
                   expected.at(sft["image"].get<std::string>() + ".pixel_values." + proc),
                   {{grid[0], grid[1], grid[2]}}};

  auto run = [&](bool recompute) {
    Qwen2VL m(Qwen2VLImpl::from_pretrained(dir, torch::kFloat32));
    LoraConfig lc;
    lc.r = 4;
    lc.dropout = 0.2;
    apply_lora(*m, lc, 3);
    torch::manual_seed(5);
    for (auto& p : m->named_parameters())  // B = 0 at init: give it values so A gets gradients too
      if (p.key().find("lora_B") != std::string::npos) p.value().data().normal_(0, 0.1);
    m->train();
    m->model->gradient_checkpointing = recompute;
    torch::manual_seed(11);
    torch::Tensor loss = sft_loss(*m, in, labels);
    // one recomputed block per decoder layer, or none
    EXPECT_EQ(count_nodes(loss, "CheckpointFunction"),
              recompute ? m->config().text.num_hidden_layers : 0);
    loss.backward();
    std::map<std::string, torch::Tensor> g;
    for (auto& p : m->named_parameters())
      if (p.value().grad().defined()) g[p.key()] = p.value().grad().clone();
    return g;
  };
  auto plain = run(false), ck = run(true);
  ASSERT_EQ(plain.size(), ck.size());
  ASSERT_GT(plain.size(), 0u);
  for (const auto& [k, v] : plain) {
    const double rel = ((v - ck.at(k)).abs().max() / v.abs().max().clamp_min(1e-12)).item<double>();
    EXPECT_LT(rel, 1e-5) << k;
  }
}
