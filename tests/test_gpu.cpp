// The Qwen2-VL golden checks on an NVIDIA GPU (CUDA libtorch): float32 with TF32 off at 1e-4,
// bfloat16 at the reference's CUDA calibration, greedy tokens exact, label scores within 1e-3,
// the ViT teacher at 1e-4, ResNet and VGG (cuDNN convolutions and BatchNorm) at 1e-4, CUDA graphs
// replaying decoding steps. Labelled `gpu`: `make test` skips it; without CUDA every test skips.
#include <gtest/gtest.h>

#include "emovlm/core/cuda.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/data/labels.h"
#include "emovlm/models/grad_checkpoint.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/nf4.h"
#include "emovlm/models/qwen2vl.h"
#include "emovlm/models/qwen2vl_fixed_decoder.h"
#include "emovlm/models/qwen2vl_generation.h"
#include "emovlm/models/qwen2vl_label_scores.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/models/vit.h"
#include "test_util.h"

using namespace emovlm;

namespace {

std::string qdir() {
  return test::ref_path("qwen2vl_tiny");
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor x = a.to(torch::kCPU).to(torch::kFloat64),
                y = b.to(torch::kCPU).to(torch::kFloat64);
  return ((x - y).abs().max() / y.abs().max()).item<double>();
}

#define REQUIRE_CUDA()                                           \
  do {                                                           \
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA"; \
    at::globalContext().setAllowTF32CuBLAS(false);               \
    at::globalContext().setAllowTF32CuDNN(false);                \
  } while (0)

Qwen2VLInputs prompt_inputs(const json& cases, const std::map<std::string, torch::Tensor>& exp,
                            const json& p) {
  Qwen2VLInputs in;
  in.input_ids =
      torch::tensor(p["input_ids"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
  in.attention_mask = torch::ones_like(in.input_ids);
  if (!p["image"].is_null()) {
    const std::string img = p["image"];
    std::string proc = "pil";
    for (const auto& im : cases["images"])
      if (im["name"] == img) {
        proc = im.value("reference_processor", proc);
        auto g = im["grid_thw." + proc].get<std::vector<int64_t>>();
        in.grids = {{g[0], g[1], g[2]}};
      }
    in.pixel_values = exp.at(img + ".pixel_values." + proc);
  }
  return in;
}

}  // namespace

TEST(Gpu, Qwen2VLFloat32AndGreedy) {
  REQUIRE_CUDA();
  json cases = read_json_file(qdir() + "/cases.json");
  auto exp = load_tensors(qdir() + "/expected.safetensors");
  Qwen2VL m(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32, torch::kCUDA));
  torch::NoGradGuard ng;
  bool fixed_checked = false;
  for (const auto& p : cases["prompts"]) {
    const std::string name = p["name"];
    Qwen2VLOutput out = m->forward(prompt_inputs(cases, exp, p));
    EXPECT_LT(rel_err(out.logits[0], exp.at(name + ".logits")), 1e-4) << name;
    for (bool graph : {false, true}) {
      GenerationConfig g;
      g.max_new_tokens = 12;
      g.eos_token_ids = {-1};
      g.cuda_graph = graph;
      EXPECT_EQ(generate(*m, prompt_inputs(cases, exp, p), g).tokens[0],
                p["greedy_12"].get<std::vector<int64_t>>())
          << name << (graph ? " (CUDA graph)" : "");
    }
    if (p["image"].is_null() || fixed_checked) continue;
    // one image prompt: the graph-replayed fixed-shape steps against decode(), logits per step
    fixed_checked = true;
    Qwen2VLInputs in = prompt_inputs(cases, exp, p);
    KVCache cache;
    Qwen2VLOutput pre = m->forward(in, &cache, true);
    const int64_t steps = 6;
    FixedDecoder fixed(*m, cache, in.attention_mask, pre.rope_deltas, steps, /*cuda_graph=*/true);
    EXPECT_TRUE(fixed.uses_graph());
    torch::Tensor key_mask = in.attention_mask,
                  next = pre.logits.select(1, 0).argmax(-1, true).cpu();
    for (int64_t s = 0; s < steps;
         ++s) {  // step 0 eager, step 1 records, every step replays from 1 on
      key_mask = torch::cat({key_mask, torch::ones({1, 1}, torch::kInt64)}, 1);
      torch::Tensor want = m->decode(next, pre.rope_deltas, key_mask, cache);
      torch::Tensor got = fixed.step(next).clone();
      EXPECT_LT(rel_err(got, want), 1e-5) << name << " step " << s;
      next = want.argmax(-1, true).cpu();
    }
  }
  EXPECT_TRUE(fixed_checked);
}

TEST(Gpu, CudaGraphReplaysRecordedWork) {
  REQUIRE_CUDA();
  ASSERT_TRUE(CudaGraph::available());
  torch::Tensor x = torch::zeros({1000}, torch::kCUDA), y;
  CudaGraph graph(torch::kCUDA);
  graph.run_eager([&] { y = x * 2 + 1; });  // warm-up
  graph.capture([&] { y = x * 2 + 1; });    // recorded, not run: y now lives in the graph's pool
  for (float v : {3.0f, 5.0f}) {
    x.fill_(v);
    graph.replay();
    EXPECT_TRUE(torch::equal(y.cpu(), torch::full({1000}, 2 * v + 1))) << v;
  }
}

TEST(Gpu, Qwen2VLBfloat16) {
  REQUIRE_CUDA();
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/calibration.json");
  json cases = read_json_file(qdir() + "/cases.json");
  json cal = read_json_file(qdir() + "/calibration.json")["cuda.bfloat16"];
  auto exp = load_tensors(qdir() + "/expected.safetensors");
  Qwen2VL m(Qwen2VLImpl::from_pretrained(qdir(), torch::kBFloat16, torch::kCUDA));
  torch::NoGradGuard ng;
  for (const auto& p : cases["prompts"]) {
    if (p["image"].is_null()) continue;
    const std::string name = p["name"];
    torch::Tensor logits = m->forward(prompt_inputs(cases, exp, p)).logits[0].to(torch::kFloat32);
    EXPECT_LT(rel_err(logits, exp.at(name + ".logits")),
              1.25 * cal["logits_maxabs_over_maxref"].get<double>())
        << name;
  }
}

TEST(Gpu, LabelScores) {
  REQUIRE_CUDA();
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/extra_cases.json");
  json cases = read_json_file(qdir() + "/cases.json");
  json extra = read_json_file(qdir() + "/extra_cases.json");
  auto exp = load_tensors(qdir() + "/expected.safetensors");
  Qwen2VL m(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32, torch::kCUDA));
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(qdir());
  for (auto it = extra["label_scores"]["scores"].begin();
       it != extra["label_scores"]["scores"].end(); ++it) {
    for (const auto& p : cases["prompts"]) {
      if (p["name"] != it.key()) continue;
      torch::Tensor rgb = exp.at(p["image"].get<std::string>() + ".rgb");
      RgbImage img(static_cast<int>(rgb.size(1)), static_cast<int>(rgb.size(0)));
      std::memcpy(img.pixels.data(), rgb.data_ptr(), img.pixels.size());
      std::vector<std::vector<int32_t>> cands;
      std::vector<double> want;
      for (auto c = it.value().begin(); c != it.value().end(); ++c) {
        cands.push_back(c.value()["answer_ids"].get<std::vector<int32_t>>());
        want.push_back(c.value()["sum_logprob"].get<double>());
      }
      torch::Tensor s = label_scores(*m, proc, {{p["text"], {img}}}, cands);
      for (size_t c = 0; c < want.size(); ++c) EXPECT_NEAR(s[0][c].item<double>(), want[c], 1e-3);
    }
  }
}

TEST(Gpu, VitTeacher) {
  REQUIRE_CUDA();
  const std::string dir = test::ref_path("vit_tiny");
  json cases = read_json_file(dir + "/cases.json");
  auto exp = load_tensors(dir + "/expected.safetensors");
  VitForImageClassification m(VitForImageClassificationImpl::from_pretrained(dir));
  m->eval();
  m->to(torch::kCUDA);
  torch::NoGradGuard ng;
  for (const auto& c : cases["images"])
    EXPECT_LT(rel_err(m->forward(exp.at(c["pixel_values"].get<std::string>()).to(torch::kCUDA))[0],
                      exp.at(c["name"].get<std::string>() + ".logits")),
              1e-4);
}

// ResNet and VGG on cuDNN against torchvision (tests/data/cnn): eval logits, and a train-mode
// step's loss, gradients and running statistics (cuDNN's BatchNorm), float32 with TF32 off.
TEST(Gpu, CnnTeachers) {
  REQUIRE_CUDA();
  for (const char* name : {"resnet_tiny", "vgg_bn_tiny"}) {
    const std::string dir = std::string(EMOVLM_TEST_DATA_DIR) + "/cnn/" + name;
    json cases = read_json_file(dir + "/cases.json");
    auto exp = load_tensors(dir + "/expected.safetensors");
    std::shared_ptr<ImageClassifierImpl> m = load_image_classifier(dir);
    m->to(torch::kCUDA);
    m->eval();
    {
      torch::NoGradGuard ng;
      for (const auto& in : cases["inputs"])
        EXPECT_LT(rel_err(m->logits(exp.at(in.get<std::string>()).to(torch::kCUDA)),
                          exp.at(in.get<std::string>() + ".logits")),
                  1e-4)
            << name << " " << in;
    }
    m->train();
    torch::Tensor y =
        torch::tensor(cases["train_labels"].get<std::vector<int64_t>>(), torch::kInt64)
            .to(torch::kCUDA);
    torch::Tensor loss = torch::cross_entropy_loss(
        m->logits(exp.at(cases["train_input"].get<std::string>()).to(torch::kCUDA)), y);
    EXPECT_NEAR(loss.item<double>(), cases["train_loss"].get<double>(), 1e-4) << name;
    loss.backward();
    std::map<std::string, torch::Tensor> t;
    for (const auto& p : m->named_parameters()) t[p.key()] = p.value();
    for (const auto& b : m->named_buffers()) t[b.key()] = b.value();
    for (const auto& n : cases["grad_names"])
      EXPECT_LT(
          rel_err(t.at(n.get<std::string>()).grad(), exp.at("train.grad." + n.get<std::string>())),
          1e-4)
          << name << " " << n;
    for (const auto& n : cases["bn_names"])
      for (const char* b : {"running_mean", "running_var"})
        EXPECT_LT(rel_err(t.at(n.get<std::string>() + "." + b),
                          exp.at("train." + n.get<std::string>() + "." + b)),
                  1e-4)
            << name << " " << n << "." << b;
  }
}

TEST(Gpu, Nf4QuantizesOnTheDeviceAsOnTheCpu) {
  REQUIRE_CUDA();
  torch::manual_seed(0);
  torch::Tensor w = torch::randn({96, 130});
  NF4Tensor a = nf4_quantize(w, 64, true), b = nf4_quantize(w.to(torch::kCUDA), 64, true);
  EXPECT_TRUE(torch::equal(a.codes, b.codes.to(torch::kCPU)));
  EXPECT_LT(rel_err(b.dequantize(torch::kFloat32), a.dequantize(torch::kFloat32)), 1e-6);
  // a Linear on the CPU quantized onto the GPU (tune --qlora's load path): the same codes, there
  Linear cpu(130, 96, false), moved(130, 96, false);
  {
    torch::NoGradGuard ng;
    cpu->weight.copy_(w);
    moved->weight.copy_(w);
  }
  cpu->quantize_nf4(true);
  moved->quantize_nf4(true, torch::Device(torch::kCUDA));
  EXPECT_TRUE(moved->nf4->codes.is_cuda());
  EXPECT_TRUE(moved->weight.is_cuda());
  EXPECT_TRUE(torch::equal(cpu->nf4->codes, moved->nf4->codes.cpu()));
  torch::Tensor x = torch::randn({3, 130});
  EXPECT_LT(rel_err(moved(x.cuda()), cpu(x)), 1e-5);
}

TEST(Gpu, AutocastAndGradientCheckpointing) {
  REQUIRE_CUDA();
  torch::nn::Linear l(16, 16);
  l->to(torch::kCUDA);
  torch::Tensor x = torch::randn({4, 16}, torch::kCUDA);
  {
    compat::AutocastGuard g(torch::kCUDA, torch::kBFloat16);
    EXPECT_EQ(l(x).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(l(x).scalar_type(), torch::kFloat32);
  auto grads = [&](bool recompute) {
    l->zero_grad();
    torch::manual_seed(3);
    auto f = [&](const torch::Tensor& h) { return torch::dropout(l(h), 0.5, true); };
    (recompute ? checkpointed(f, x) : f(x)).pow(2).sum().backward();
    return l->weight.grad().clone();
  };
  EXPECT_TRUE(torch::allclose(grads(false),
                              grads(true)));  // the CUDA RNG is restored for the recomputation
}
