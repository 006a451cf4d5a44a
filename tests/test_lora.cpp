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
#include "test_util.h"

using namespace emovlm;
namespace fs = std::filesystem;

namespace {
std::string qdir() { return test::ref_path("qwen2vl_tiny"); }
double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max() / b.to(torch::kFloat64).abs().max()).item<double>();
}
struct Case {
  json cases = read_json_file(qdir() + "/cases.json");
  std::map<std::string, torch::Tensor> exp = load_tensors(qdir() + "/expected.safetensors");
  GridTHW grid(const std::string& image) const {
    for (const auto& im : cases["images"])
      if (im["name"] == image) {
        auto g = im["grid_thw.pil"].get<std::vector<int64_t>>();
        return {g[0], g[1], g[2]};
      }
    throw Error("no image " + image);
  }
};
}  // namespace

TEST(Lora, AdapterLogitsLossAndGradientsMatchReference) {
  Case c;
  Qwen2VL model(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  LoraConfig cfg = load_peft_adapter(*model, qdir() + "/lora_adapter");
  EXPECT_EQ(cfg.r, 4);
  model->eval();
  // logits with the adapter
  for (const auto& p : c.cases["prompts"]) {
    const std::string key = "lora." + p["name"].get<std::string>() + ".logits";
    if (!c.exp.count(key)) continue;
    torch::NoGradGuard ng;
    Qwen2VLInputs in;
    in.input_ids = torch::tensor(p["input_ids"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
    in.grids = {c.grid(p["image"])};
    in.pixel_values = c.exp.at(p["image"].get<std::string>() + ".pixel_values.pil");
    EXPECT_LT(rel_err(model->forward(in).logits[0], c.exp.at(key)), 1e-4) << key;
  }
  // the SFT loss and the layer-0 adapter gradients
  const json& sft = c.cases["sft"];
  torch::Tensor ids = torch::tensor(sft["input_ids"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
  torch::Tensor labels = torch::tensor(sft["labels"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
  Qwen2VLInputs in{ids, torch::ones_like(ids), c.exp.at(sft["image"].get<std::string>() + ".pixel_values.pil"),
                   {c.grid(sft["image"])}};
  torch::Tensor loss = sft_loss(*model, in, labels);
  EXPECT_NEAR(loss.item<double>(), sft["lora_loss"].get<double>(), 1e-4 * sft["lora_loss"].get<double>());
  loss.backward();
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : model->named_parameters()) params[p.key()] = p.value();
  int checked = 0;
  for (const auto& gk : sft["lora_grad_keys"]) {
    // grad.base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight
    std::string k = gk.get<std::string>();
    const std::string pre = "grad.base_model.model.model.language_model.";
    ASSERT_EQ(k.rfind(pre, 0), 0u) << k;
    std::string ours = "model." + k.substr(pre.size());
    ours = ours.substr(0, ours.find(".default.weight"));
    ASSERT_TRUE(params.count(ours)) << ours;
    EXPECT_LT(rel_err(params[ours].grad(), c.exp.at(k)), 1e-4) << k;
    ++checked;
  }
  EXPECT_EQ(checked, 8);
  // only the adapters train
  for (const auto& p : model->named_parameters())
    EXPECT_EQ(p.value().requires_grad(), p.key().find("lora_") != std::string::npos) << p.key();
}

TEST(Lora, PrefixesRoundTripAndMerge) {
  Case c;
  torch::NoGradGuard ng;
  const json& p = c.cases["prompts"][0];
  Qwen2VLInputs in;
  in.input_ids = torch::tensor(p["input_ids"].get<std::vector<int64_t>>(), torch::kInt64).view({1, -1});
  in.grids = {c.grid(p["image"])};
  in.pixel_values = c.exp.at(p["image"].get<std::string>() + ".pixel_values.pil");
  Qwen2VL a(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  load_peft_adapter(*a, qdir() + "/lora_adapter");
  torch::Tensor want = a->forward(in).logits;

  // the transformers-4 prefix (base_model.model.model.layers...) loads the same
  test::TempDir dir;
  fs::copy_file(qdir() + "/lora_adapter/adapter_config.json", dir / "adapter_config.json");
  std::map<std::string, torch::Tensor> t4;
  for (auto& [k, v] : load_tensors(qdir() + "/lora_adapter/adapter_model.safetensors")) {
    std::string key = k;
    key.replace(key.find("model.language_model."), std::string("model.language_model.").size(), "model.");
    t4[key] = v;
  }
  save_tensors(dir / "adapter_model.safetensors", t4);
  Qwen2VL b(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  load_peft_adapter(*b, dir.path());
  EXPECT_TRUE(torch::allclose(b->forward(in).logits, want, 1e-5, 1e-5));

  // save in PEFT's format and load back
  LoraConfig cfg = LoraConfig::from_json(read_json_file(qdir() + "/lora_adapter/adapter_config.json"), "cfg");
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
