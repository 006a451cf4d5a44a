// LoRA: PEFT adapters against the reference (logits, SFT loss, layer-0 gradients), both key
// prefixes, save/load round trip, merge, B = 0 leaves the model unchanged.
#include <gtest/gtest.h>

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/lora.h"
#include "emovlm/models/qwen2vl.h"
#include "emovlm/train/sft.h"
#include "test_sensitivity.h"
#include "test_util.h"

using namespace emovlm;
namespace fs = std::filesystem;

namespace {
std::string qdir() {
  return test::ref_path("qwen2vl_tiny");
}
double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max() /
          b.to(torch::kFloat64).abs().max())
      .item<double>();
}
struct Case {
  json cases = read_json_file(qdir() + "/cases.json");
  std::map<std::string, torch::Tensor> exp = load_tensors(qdir() + "/expected.safetensors");
  const json& image(const std::string& name) const {
    for (const auto& im : cases["images"])
      if (im["name"] == name) return im;
    throw Error("no image " + name);
  }
  std::string processor(const std::string& name) const {
    return image(name).value("reference_processor", std::string("pil"));
  }
  GridTHW grid(const std::string& name) const {
    auto g = image(name)["grid_thw." + processor(name)].get<std::vector<int64_t>>();
    return {g[0], g[1], g[2]};
  }
  torch::Tensor pixels(const std::string& name) const {
    return exp.at(name + ".pixel_values." + processor(name));
  }
};
}  // namespace

// With the reference's adapter, in float32 and in float64: the logits, the SFT loss and the
// layer-0 adapter gradients. Float32 logits and loss within 1e-4 (the reference's own float32
// error is 1e-6 of its logits); everything else within twice its response to one-ulp weight
// moves (test_sensitivity.h): these gradients are ill-conditioned, one-ulp moves of the weights
// move them by 1e-5 to 5e-5 of their largest value on the shipped model, and the reference's own
// float32 steps leave it that uncertain.
TEST(Lora, AdapterLogitsLossAndGradientsMatchReference) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/lora_adapter/adapter_model.safetensors");
  Case c;
  const json& sft = c.cases["sft"];
  // what is compared: [logits of each prompt with a lora.* reference..., loss, gradients...]
  std::vector<std::string> names;
  std::vector<torch::Tensor> refs;
  std::vector<json> prompts;
  for (const auto& p : c.cases["prompts"]) {
    const std::string key = "lora." + p["name"].get<std::string>() + ".logits";
    if (!c.exp.count(key)) continue;
    prompts.push_back(p);
    names.push_back(key);
    refs.push_back(c.exp.at(key));
  }
  const size_t n_logits = names.size();
  names.push_back("lora_loss");
  refs.push_back(torch::tensor({sft["lora_loss"].get<double>()}, torch::kFloat64));
  std::vector<std::string> params;  // ours for each reference gradient
  for (const auto& gk : sft["lora_grad_keys"]) {
    // grad.base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight
    const std::string k = gk.get<std::string>(),
                      pre = "grad.base_model.model.model.language_model.";
    ASSERT_EQ(k.rfind(pre, 0), 0u) << k;
    std::string ours = "model." + k.substr(pre.size());
    params.push_back(ours.substr(0, ours.find(".default.weight")));
    names.push_back(k);
    refs.push_back(c.exp.at(k));
  }
  ASSERT_GT(params.size(), 0u);
  torch::Tensor ids =
      torch::tensor(sft["input_ids"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
  torch::Tensor labels =
      torch::tensor(sft["labels"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    const char* dt = dtype == torch::kFloat32 ? "float32" : "float64";
    const test::Sensitivity s = test::sensitivity([&](uint64_t seed) {
      Qwen2VL model(Qwen2VLImpl::from_pretrained(qdir(), dtype));
      if (seed) test::nudge_weights(*model, seed);
      LoraConfig cfg = load_peft_adapter(*model, qdir() + "/lora_adapter");
      EXPECT_EQ(cfg.r,
                read_json_file(qdir() + "/lora_adapter/adapter_config.json")["r"].get<int64_t>());
      // only the adapters train
      for (const auto& p : model->named_parameters())
        EXPECT_EQ(p.value().requires_grad(), p.key().find("lora_") != std::string::npos) << p.key();
      model->eval();
      std::vector<torch::Tensor> out;
      for (const auto& p : prompts) {
        torch::NoGradGuard ng;
        Qwen2VLInputs in;
        in.input_ids =
            torch::tensor(p["input_ids"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
        in.grids = {c.grid(p["image"])};
        in.pixel_values = c.pixels(p["image"]).to(dtype);
        out.push_back(model->forward(in).logits[0]);
      }
      Qwen2VLInputs in{
          ids, torch::ones_like(ids), c.pixels(sft["image"]).to(dtype), {c.grid(sft["image"])}};
      torch::Tensor loss = sft_loss(*model, in, labels);
      loss.backward();
      out.push_back(loss.detach().view({1}));
      std::map<std::string, torch::Tensor> by_name;
      for (const auto& p : model->named_parameters()) by_name[p.key()] = p.value();
      for (const auto& name : params) {
        EXPECT_TRUE(by_name.count(name) && by_name[name].grad().defined()) << name;
        out.push_back(by_name.count(name) ? by_name[name].grad().clone() : torch::zeros({1}));
      }
      return out;
    });
    for (size_t i = 0; i < refs.size(); ++i) {
      const double err = test::max_rel(s.outputs[i], refs[i]);
      const bool fixed = dtype == torch::kFloat32 && i <= n_logits;  // float32 logits and loss
      const double tol =
          fixed ? 1e-4 : 2 * s.move[i] + (dtype == torch::kFloat64 ? test::kStorageRounding : 0.0);
      EXPECT_LT(err, tol) << dt << " " << names[i] << ": one-ulp weight moves move it by "
                          << s.move[i];
    }
  }
}

TEST(Lora, PrefixesRoundTripAndMerge) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/lora_adapter/adapter_model.safetensors");
  Case c;
  torch::NoGradGuard ng;
  const json& p = c.cases["prompts"][0];
  Qwen2VLInputs in;
  in.input_ids =
      torch::tensor(p["input_ids"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
  in.grids = {c.grid(p["image"])};
  in.pixel_values = c.pixels(p["image"]);
  Qwen2VL a(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  load_peft_adapter(*a, qdir() + "/lora_adapter");
  torch::Tensor want = a->forward(in).logits;

  // the transformers-4 prefix (base_model.model.model.layers...) loads the same
  test::TempDir dir;
  fs::copy_file(qdir() + "/lora_adapter/adapter_config.json", dir / "adapter_config.json");
  std::map<std::string, torch::Tensor> t4;
  for (auto& [k, v] : load_tensors(qdir() + "/lora_adapter/adapter_model.safetensors")) {
    std::string key = k;
    key.replace(key.find("model.language_model."), std::string("model.language_model.").size(),
                "model.");
    t4[key] = v;
  }
  save_tensors(dir / "adapter_model.safetensors", t4);
  Qwen2VL b(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  load_peft_adapter(*b, dir.path());
  EXPECT_TRUE(torch::allclose(b->forward(in).logits, want, 1e-5, 1e-5));

  // save in PEFT's format and load back
  LoraConfig cfg =
      LoraConfig::from_json(read_json_file(qdir() + "/lora_adapter/adapter_config.json"), "cfg");
  save_peft_adapter(*b, cfg, dir / "saved", "qwen2vl_tiny");
  Qwen2VL d(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  load_peft_adapter(*d, dir / "saved");
  EXPECT_TRUE(torch::allclose(d->forward(in).logits, want, 1e-5, 1e-5));
  // merged weights give the same logits without adapters
  merge_lora(*d);
  for (const auto& q : d->named_parameters()) EXPECT_EQ(q.key().find("lora_"), std::string::npos);
  EXPECT_LT(rel_err(d->forward(in).logits, want), 1e-4);  // another order of float32 operations

  // an adapter missing a tensor: an error naming it
  t4.erase(t4.begin());
  save_tensors(dir / "adapter_model.safetensors", t4);
  Qwen2VL e(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  EXPECT_THROW(load_peft_adapter(*e, dir.path()), Error);
}

TEST(Lora, FreshAdapterLeavesTheModelUnchanged) {
  Linear l(16, 8, true);
  init_random(*l, 1);
  torch::Tensor x = torch::randn({3, 16});
  torch::Tensor before = l->forward(x).detach();
  l->add_lora(4, 2.0, 0.0);
  EXPECT_TRUE(torch::equal(l->forward(x), before));  // B = 0
  EXPECT_EQ(l->lora_A.sizes(), (std::vector<int64_t>{4, 16}));
  EXPECT_THROW(l->add_lora(4, 2.0, 0.0), Error);
}

// Adapters take the base's dtype as PEFT gives them: float64 over a float64 base (a float64 model
// stays float64 throughout), float32 over float32 and half-precision bases.
TEST(Lora, AdapterDtypeFollowsTheBase) {
  const std::vector<std::pair<torch::ScalarType, torch::ScalarType>> cases = {
      {torch::kFloat64, torch::kFloat64},
      {torch::kFloat32, torch::kFloat32},
      {torch::kBFloat16, torch::kFloat32}};
  for (const auto& [base, want] : cases) {
    Linear l(16, 8, true);
    l->to(base);
    l->add_lora(4, 2.0, 0.0, torch::randn({4, 16}), torch::randn({8, 4}));
    EXPECT_EQ(l->lora_A.scalar_type(), want) << base;
    EXPECT_EQ(l->lora_B.scalar_type(), want) << base;
    EXPECT_EQ(l->forward(torch::randn({2, 16}).to(base)).scalar_type(), base) << base;
  }
}
