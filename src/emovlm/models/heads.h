// The small trainable parts of EmoVLM-KD: the distillation head (an MLP on the pooled visual
// features), its loss (KL to the teacher at temperature T + cross-entropy), and the five gates
// that combine the VLM's answer with the head's output.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "emovlm/models/layers.h"

namespace emovlm {

// Linear(d, h1) -> GELU -> Dropout -> ... -> Linear(h_last, C). Weights "layers.K.{weight,bias}".
class DistillHeadImpl : public torch::nn::Module {
 public:
  DistillHeadImpl(int64_t in_dim, std::vector<int64_t> hidden, int64_t num_classes,
                  double dropout = 0.1);
  torch::Tensor forward(const torch::Tensor& features);  // [B, d] -> [B, C] (float32)
  int64_t num_parameters() const;
  // Matmuls in this dtype (bf16 runs on AMX on the CPU; the weights stay float32 masters).
  void set_compute_dtype(torch::ScalarType t) { compute_ = t; }
  const std::vector<int64_t>& hidden() const { return hidden_; }
  int64_t in_dim() const { return in_; }
  int64_t num_classes() const { return classes_; }
  double dropout() const { return dropout_; }

  torch::nn::ModuleList layers{nullptr};

 private:
  int64_t in_, classes_;
  std::vector<int64_t> hidden_;
  double dropout_;
  torch::ScalarType compute_ = torch::kFloat32;
};
TORCH_MODULE(DistillHead);

struct KDLoss {
  torch::Tensor loss, kl, ce;  // scalars
};
// alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) (batch mean) + (1 - alpha) * CE(s, y).
KDLoss kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
               const torch::Tensor& labels, double temperature = 2.0, double alpha = 0.5);

// Gate kinds: concat (Linear(2C, C)), moe (3 experts + softmax gate), bilinear (Bilinear(C, C, C)
// then Linear(C, C)), dynamic (softmax(Linear(2C, 2)) weighs the two inputs, then Linear(C, C)),
// cross (g1 = sigmoid(L(v2)), g2 = sigmoid(L(v1)), Linear(g1 v1 + g2 v2)).
class GateImpl : public torch::nn::Module {
 public:
  GateImpl(std::string kind, int64_t num_classes);
  // vlm [B, C] (one-hot or distribution), head [B, C] (logits) -> fused logits [B, C].
  // weights (optional) receives the weights the gate computes for this input where it has them:
  // dynamic and cross, one for each input [B, 2]; moe, its experts' mixture [B, 3].
  torch::Tensor forward(const torch::Tensor& vlm, const torch::Tensor& head,
                        torch::Tensor* weights = nullptr);
  const std::string& kind() const { return kind_; }
  int64_t num_parameters() const;
  // Sets the weights so that the gate starts as a weighted average of its inputs'
  // log-probabilities: forward(v, h) = head_weight * h + vlm_weight * v. With h the head's logits
  // and v the VLM's one-hot answer, softmax of it is the normalised product of softmax(h)^a and a
  // VLM distribution that puts log-odds b on its answer (a log-linear pool). Bilinear, which has
  // no term linear in v alone, starts as head_weight * h * sum(v). `noise` times the default
  // random initialisation is added, so that units that start equal (moe's experts) can diverge.
  void init_average(double head_weight, double vlm_weight, double noise = 0.05);

 private:
  std::string kind_;
  int64_t c_;
  Linear l1{nullptr}, l2{nullptr}, gate{nullptr}, out{nullptr};
  torch::nn::ModuleList experts{nullptr};
  std::shared_ptr<torch::nn::Module> bilinear;
  torch::Tensor bil_w, bil_b;
};
TORCH_MODULE(Gate);

const std::vector<std::string>& gate_kinds();

}  // namespace emovlm
