// LoRA adapters on the Linear layers named by target_modules (q_proj, k_proj, v_proj, o_proj by
// default), in PEFT's format: adapter_config.json + adapter_model.safetensors, reading both key
// prefixes found in the wild (transformers 5: base_model.model.model.language_model.layers...;
// transformers 4: base_model.model.model.layers...) and writing the transformers-5 one.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace emovlm {

struct LoraConfig {
  int64_t r = 8;
  double alpha = 8;
  double dropout = 0.05;
  std::vector<std::string> target_modules{"q_proj", "k_proj", "v_proj", "o_proj"};
  bool use_rslora = false;

  double scaling() const;
  static LoraConfig from_json(const nlohmann::json& j,
                              const std::string& where);  // PEFT adapter_config.json
  nlohmann::json to_json(const std::string& base_model) const;
  void validate() const;
};

// Adds adapters to every matching Linear under root: A ~ kaiming-uniform (as PEFT), B = 0, so the
// model is unchanged until trained. Base weights are frozen. Returns the number of adapted layers.
int apply_lora(torch::nn::Module& root, const LoraConfig& config, uint64_t seed = 0);
// Reads DIR/adapter_config.json + adapter_model.safetensors into root (applying the adapters).
// Missing or mis-shaped adapter tensors: an error naming them.
LoraConfig load_peft_adapter(torch::nn::Module& root, const std::string& dir);
// Writes the adapters of root in PEFT's format.
void save_peft_adapter(torch::nn::Module& root, const LoraConfig& config, const std::string& dir,
                       const std::string& base_model = "");
// W += scaling * B A in every adapted layer, then drops the adapters.
void merge_lora(torch::nn::Module& root);
// The PEFT key (transformers-5 layout) of an adapter matrix of our module `name`
// ("model.layers.0.self_attn.q_proj").
std::string peft_key(const std::string& module_name, const char* matrix);

}  // namespace emovlm
