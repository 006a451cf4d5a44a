// LoRA adapters in PEFT's format.
#include "emovlm/models/lora.h"

#include <cmath>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/weights.h"

namespace emovlm {

namespace fs = std::filesystem;

double LoraConfig::scaling() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r;
}

void LoraConfig::validate() const {
  check_range(r, 1, 65536, "LoRA rank r");
  check_positive_finite(alpha, 1e6, "LoRA lora_alpha");
  check(dropout >= 0 && dropout < 1, cat("LoRA lora_dropout ", dropout, " must be in [0, 1)"));
  check(!target_modules.empty(), "LoRA needs at least one target module");
}

LoraConfig LoraConfig::from_json(const json& j, const std::string& where) {
  LoraConfig c;
  const std::string type = json_optional<std::string>(j, "peft_type", "LORA", where);
  if (type != "LORA") throw Error(cat(where, ": peft_type '", type, "' is not supported (LORA)"));
  c.r = json_optional<int64_t>(j, "r", c.r, where);
  c.alpha = json_optional<double>(j, "lora_alpha", c.alpha, where);
  c.dropout = json_optional<double>(j, "lora_dropout", c.dropout, where);
  c.use_rslora = json_optional<bool>(j, "use_rslora", false, where);
  if (j.contains("target_modules") && j["target_modules"].is_array())
    c.target_modules = json_required<std::vector<std::string>>(j, "target_modules", where);
  if (json_optional<bool>(j, "use_dora", false, where))
    throw Error(cat(where, ": DoRA adapters are not supported"));
  if (j.contains("rank_pattern") && j["rank_pattern"].is_object() && !j["rank_pattern"].empty())
    throw Error(cat(where, ": per-module ranks (rank_pattern) are not supported"));
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(cat(where, ": ", e.what()));
  }
  return c;
}

json LoraConfig::to_json(const std::string& base_model) const {
  return {{"peft_type", "LORA"},
          {"task_type", "CAUSAL_LM"},
          {"r", r},
          {"lora_alpha", alpha},
          {"lora_dropout", dropout},
          {"target_modules", target_modules},
          {"bias", "none"},
          {"fan_in_fan_out", false},
          {"use_rslora", use_rslora},
          {"use_dora", false},
          {"inference_mode", true},
          {"init_lora_weights", true},
          {"modules_to_save", nullptr},
          {"rank_pattern", json::object()},
          {"alpha_pattern", json::object()},
          {"base_model_name_or_path", base_model.empty() ? json(nullptr) : json(base_model)}};
}

namespace {

std::vector<std::pair<std::string, LinearImpl*>> targets(torch::nn::Module& root,
                                                         const LoraConfig& c) {
  std::vector<std::pair<std::string, LinearImpl*>> out;
  for (const auto& item : root.named_modules()) {
    auto* lin = dynamic_cast<LinearImpl*>(item.value().get());
    if (!lin) continue;
    const std::string& name = item.key();
    const std::string leaf = name.substr(name.rfind('.') + 1);
    if (std::find(c.target_modules.begin(), c.target_modules.end(), leaf) != c.target_modules.end())
      out.emplace_back(name, lin);
  }
  return out;
}

void freeze_base(torch::nn::Module& root) {
  for (auto& p : root.named_parameters())
    p.value().set_requires_grad(p.key().find("lora_") != std::string::npos);
}

}  // namespace

std::string peft_key(const std::string& module, const char* matrix) {
  std::string m = module;
  if (m.rfind("model.", 0) == 0)
    m = "model.language_model." + m.substr(6);  // transformers-5 layout
  else if (m.rfind("visual.", 0) == 0)
    m = "model." + m;
  return "base_model.model." + m + "." + matrix + ".weight";
}

int apply_lora(torch::nn::Module& root, const LoraConfig& c, uint64_t seed) {
  c.validate();
  torch::manual_seed(seed);
  auto ts = targets(root, c);
  if (ts.empty()) throw Error("LoRA: no Linear layer matches the target modules");
  for (auto& [name, lin] : ts) lin->add_lora(c.r, c.scaling(), c.dropout);
  freeze_base(root);
  return static_cast<int>(ts.size());
}

LoraConfig load_peft_adapter(torch::nn::Module& root, const std::string& dir) {
  const std::string cpath = (fs::path(dir) / "adapter_config.json").string();
  LoraConfig c = LoraConfig::from_json(read_json_file(cpath), cpath);
  Checkpoint ck((fs::path(dir) / "adapter_model.safetensors").string());
  // zero adapters of the config's rank on every target layer (no random draws), then filled from
  // the file, where "<layer>.lora_A" is PEFT's name of it (transformers 5 or 4 layout)
  for (auto& [name, lin] : targets(root, c))
    lin->add_lora(c.r, c.scaling(), c.dropout, torch::zeros({c.r, lin->in_features()}),
                  torch::zeros({lin->out_features(), c.r}));
  LoadOptions opt;
  opt.copy_into = true;  // the adapters keep add_lora's dtype: float32, float64 over float64
  opt.candidates = [](const std::string& n) -> std::vector<std::string> {
    for (const char* matrix : {"lora_A", "lora_B"}) {
      const std::string suffix = std::string(".") + matrix;
      if (n.size() > suffix.size() &&
          n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0) {
        const std::string layer = n.substr(0, n.size() - suffix.size());
        return {peft_key(layer, matrix), "base_model.model." + layer + "." + matrix + ".weight"};
      }
    }
    return {};  // the base model's tensors are not in an adapter file
  };
  opt.optional = [](const std::string& n) {
    return n.find(".lora_A") == std::string::npos && n.find(".lora_B") == std::string::npos;
  };
  load_weights(root, ck, opt);
  freeze_base(root);
  return c;
}

void save_peft_adapter(torch::nn::Module& root, const LoraConfig& c, const std::string& dir,
                       const std::string& base_model) {
  make_dirs(dir);
  NamedTensors ts;
  for (auto& [name, lin] : targets(root, c)) {
    if (!lin->has_lora()) continue;
    ts.emplace_back(peft_key(name, "lora_A"), lin->lora_A);
    ts.emplace_back(peft_key(name, "lora_B"), lin->lora_B);
  }
  if (ts.empty()) throw Error("save_peft_adapter: the model has no adapters");
  save_tensors((fs::path(dir) / "adapter_model.safetensors").string(), ts, {{"format", "pt"}});
  write_file_atomic((fs::path(dir) / "adapter_config.json").string(),
                    c.to_json(base_model).dump(2) + "\n");
}

void merge_lora(torch::nn::Module& root) {
  for (const auto& item : root.named_modules())
    if (auto* lin = dynamic_cast<LinearImpl*>(item.value().get())) lin->merge_lora();
}

}  // namespace emovlm
