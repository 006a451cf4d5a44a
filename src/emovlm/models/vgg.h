// VGG (11/13/16/19 layers, with or without BatchNorm) for image classification, loading timm
// checkpoints (vgg16.tv_in1k, vgg16_bn.tv_in1k: features.N, pre_logits.fc1 [4096, 512, 7, 7],
// pre_logits.fc2 [4096, 4096, 1, 1], head.fc; timm's config.json). The forward is torchvision's
// (the reference's): an adaptive average pool to 7x7, then the three linear layers; timm's
// convolutional head computes the same at 224 px (a 7x7 map) and differs at other sizes.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/models/image_classifier.h"
#include "emovlm/models/layers.h"

namespace emovlm {

struct VggConfig {
  TimmConfig timm;              // architecture, num_classes, pretrained_cfg, label_names
  std::vector<int64_t> cfg;     // convolution widths in order, 0 for a 2x2 max pool ("M" in JSON)
  bool batch_norm = false;      // the _bn architectures
  int64_t num_features = 4096;  // width of the two hidden linear layers
  int64_t pool_size = 7;        // the feature map is average-pooled to pool_size x pool_size
  double drop_rate = 0.5;       // dropout after each hidden layer (torchvision's 0.5)
  double bn_eps = 1e-5, bn_momentum = 0.1;

  // timm's config.json: the architecture's layers (vgg11 .. vgg19, _bn for BatchNorm), overridden
  // by model_args (cfg, num_features, drop_rate).
  static VggConfig from_json(const nlohmann::json& j, const std::string& where);
  static VggConfig from_dir(const std::string& dir);
  nlohmann::json to_json() const;
  void validate() const;
  int64_t out_channels() const;  // of the last convolution
};

class VggImpl : public ImageClassifierImpl {
 public:
  explicit VggImpl(const VggConfig& c);
  // A timm checkpoint directory. num_labels > 0 and different from the checkpoint's: a new head.fc
  // (seeded) replaces the checkpoint's.
  static std::shared_ptr<VggImpl> from_pretrained(const std::string& dir, int64_t num_labels = 0,
                                                  uint64_t seed = 0);
  // [B, 3, H, W] -> logits [B, num_classes]; features (optional) receives the last hidden layer [B,
  // num_features].
  torch::Tensor forward(const torch::Tensor& pixel_values, torch::Tensor* features = nullptr);
  torch::Tensor logits(const torch::Tensor& pixel_values) override { return forward(pixel_values); }
  // head.fc = Linear(num_features, n) with torch.nn.Linear's initialisation.
  void reset_classifier(int64_t n, uint64_t seed) override;
  void save_pretrained(const std::string& dir) const override;
  std::string arch() const override { return cfg_.timm.architecture; }
  int64_t num_labels() const override { return cfg_.timm.num_classes; }
  const VggConfig& config() const { return cfg_; }

 private:
  // One step of `features`: a convolution (with its BatchNorm) followed by ReLU, or a max pool.
  struct Step {
    Conv2d conv{nullptr};
    BatchNorm2d norm{nullptr};
  };
  struct FeaturesImpl : torch::nn::Module {};  // children under nn.Sequential's indices
  struct PreLogitsImpl : torch::nn::Module {
    Conv2d fc1{nullptr}, fc2{nullptr};  // linear layers stored as timm's convolutions
  };
  struct HeadImpl : torch::nn::Module {
    Linear fc{nullptr};
  };
  std::vector<Step> steps_;  // a step without conv is a max pool
  std::shared_ptr<FeaturesImpl> features_;
  std::shared_ptr<PreLogitsImpl> pre_logits_;
  std::shared_ptr<HeadImpl> head_;
  VggConfig cfg_;
};
TORCH_MODULE(Vgg);

}  // namespace emovlm
