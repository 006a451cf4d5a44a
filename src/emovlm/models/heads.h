// The distillation head of EmoVLM-KD (an MLP on the pooled visual features) and its loss (KL to
// the teacher at temperature T + cross-entropy); the gates that combine the VLM's answer with the
// head's output are in gates.h.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/core/device.h"
#include "emovlm/models/gates.h"
#include "emovlm/models/layers.h"

namespace emovlm {

// JSON keys as in a head checkpoint's "emovlm.head" metadata.
struct DistillHeadConfig {
  int64_t in_dim = 0;
  std::vector<int64_t> hidden{1024};
  int64_t num_classes = 0;
  double dropout = 0.1;
  ComputeDtype compute_dtype = ComputeDtype::f32;  // the matmuls' dtype

  // Reads "in_dim", "hidden", "num_classes" (required), "dropout" and "compute_dtype" (optional;
  // other keys of the metadata are left to the caller); `where` names the source in errors.
  static DistillHeadConfig from_json(const nlohmann::json& j,
                                     const std::string& where = "distillation head config");
  void validate() const;  // throws Error naming the field and its value
  nlohmann::json to_json() const;
};

// Linear(d, h1) -> GELU -> Dropout -> ... -> Linear(h_last, C). Weights "layers.K.{weight,bias}".
class DistillHeadImpl : public torch::nn::Module {
 public:
  explicit DistillHeadImpl(const DistillHeadConfig& config);
  // head.safetensors as the distill stage writes it (`path`: the file or its folder): the weights
  // and the "emovlm.head" metadata, whose config is validated; `metadata` (optional) receives all
  // of that metadata (the config and what the stage recorded with it: labels, the VLM, ...).
  static std::shared_ptr<DistillHeadImpl> from_pretrained(const std::string& path,
                                                          nlohmann::json* metadata = nullptr);
  // Writes the weights and `metadata` (which must hold the config's keys) as "emovlm.head".
  void save_pretrained(const std::string& path, const nlohmann::json& metadata) const;
  torch::Tensor forward(const torch::Tensor& features);  // [B, d] -> [B, C] (float32)
  const DistillHeadConfig& config() const { return config_; }
  int64_t num_classes() const { return config_.num_classes; }

  torch::nn::ModuleList layers{nullptr};

 private:
  DistillHeadConfig config_;
  // the matmuls' dtype (bf16 runs on AMX on the CPU; the weights stay float32 masters)
  torch::ScalarType compute_ = torch::kFloat32;
};
TORCH_MODULE(DistillHead);

// Head logits for every row of features [N, d] -> [N, C] on the CPU (eval mode, in batches on the
// head's device).
torch::Tensor head_logits(DistillHeadImpl& head, const torch::Tensor& features);

struct KDLoss {
  torch::Tensor loss, kl, ce;  // scalars
};
// alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) (batch mean) + (1 - alpha) * CE(s, y).
KDLoss kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
               const torch::Tensor& labels, double temperature = 2.0, double alpha = 0.5);

}  // namespace emovlm
