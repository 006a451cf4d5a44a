// The gates that fuse the VLM's answer with the distillation head's logits: their config, the
// interface they share and the factory that builds one of a kind (each kind in gate_<kind>.h).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/models/layers.h"

namespace emovlm {

// The kinds: concat, moe, bilinear, dynamic, cross.
const std::vector<std::string>& gate_kinds();

// JSON keys as in a gate checkpoint's "emovlm.gate" metadata.
struct GateConfig {
  std::string kind = "concat";
  int64_t num_classes = 0;

  // Reads "kind" and "num_classes" (other keys of the metadata are left to the caller); `where`
  // names the source in errors.
  static GateConfig from_json(const nlohmann::json& j, const std::string& where = "gate config");
  void validate() const;  // throws Error naming the field and its value
  nlohmann::json to_json() const;
};

// A gate: vlm [B, C] (one-hot or distribution) and head [B, C] (logits) -> fused logits [B, C].
class GateImpl : public torch::nn::Module {
 public:
  explicit GateImpl(const GateConfig& config);
  ~GateImpl() override = default;
  // gate.safetensors as the gate stage writes it (`path`: the file or its folder): a gate of the
  // kind its "emovlm.gate" metadata names, with its weights; `metadata` (optional) receives all of
  // that metadata.
  static std::shared_ptr<GateImpl> from_pretrained(const std::string& path,
                                                   nlohmann::json* metadata = nullptr);
  // Writes the weights and `metadata` (which must hold the config's keys) as "emovlm.gate".
  void save_pretrained(const std::string& path, const nlohmann::json& metadata) const;

  // weights (optional) receives the weights the gate computes for this input where it has them:
  // dynamic and cross, one for each input [B, 2]; moe, its experts' mixture [B, 3].
  torch::Tensor forward(const torch::Tensor& vlm, const torch::Tensor& head,
                        torch::Tensor* weights = nullptr);
  // Sets the weights so that the gate starts as a weighted average of its inputs'
  // log-probabilities: forward(v, h) = head_weight * h + vlm_weight * v. With h the head's logits
  // and v the VLM's one-hot answer, softmax of it is the normalised product of softmax(h)^a and a
  // VLM distribution that puts log-odds b on its answer (a log-linear pool). Bilinear, which has
  // no term linear in v alone, starts as head_weight * h * sum(v). `noise` times the default
  // random initialisation is added, so that units that start equal (moe's experts) can diverge.
  void init_average(double head_weight, double vlm_weight, double noise = 0.05);

  const std::string& kind() const { return config_.kind; }
  int64_t num_classes() const { return config_.num_classes; }
  const GateConfig& config() const { return config_; }

 protected:
  // forward with the VLM input in the head's dtype
  virtual torch::Tensor fuse(const torch::Tensor& vlm, const torch::Tensor& head,
                             torch::Tensor* weights) = 0;
  // init_average's part for the kind, on parameters already scaled down to the noise (no grad)
  virtual void add_average(double head_weight, double vlm_weight) = 0;

 private:
  GateConfig config_;
};
TORCH_MODULE(Gate);

// A gate of config.kind with PyTorch's default initialisation (validates the config).
Gate make_gate(const GateConfig& config);

// Linear(in, out) with PyTorch's default initialisation: U(-1/sqrt(in), 1/sqrt(in)) for the
// weight, then the bias (the head and the gates draw their starting weights in this order).
Linear default_linear(int64_t in, int64_t out);

// The [C, 2C] weight of a Linear over cat(v, h) that gives vlm_weight * v + head_weight * h is
// added to l's weight.
void add_average_weight(LinearImpl& l, double head_weight, double vlm_weight);

}  // namespace emovlm
