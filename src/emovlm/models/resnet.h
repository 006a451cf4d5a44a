// ResNet with bottleneck blocks (ResNet-50/101/152, torchvision's v1.5: the stride on the 3x3) for
// image classification, loading timm checkpoints (resnet50.tv_in1k: conv1, bn1, layerN.M.{conv1,
// bn1, conv2, bn2, conv3, bn3, downsample.0, downsample.1}, fc; timm's config.json). BatchNorm
// normalises with the batch's statistics in train mode and the running ones in eval mode.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/models/image_classifier.h"
#include "emovlm/models/layers.h"

namespace emovlm {

struct ResNetConfig {
  TimmConfig timm;  // architecture, num_classes, pretrained_cfg, label_names
  std::vector<int64_t> layers{3, 4, 6, 3};  // bottleneck blocks per stage
  int64_t base_width = 64;  // bottleneck width at the first stage (torchvision's width_per_group)
  int64_t expansion = 4;    // a stage's output channels: planes (64, 128, 256, 512) * expansion
  double drop_rate = 0.0;   // dropout before fc (timm's drop_rate; torchvision has none)
  double bn_eps = 1e-5, bn_momentum = 0.1;  // torch.nn.BatchNorm2d's defaults

  // timm's config.json: the architecture's defaults (resnet50, resnet101, resnet152), overridden by
  // model_args (layers, base_width, expansion, drop_rate).
  static ResNetConfig from_json(const nlohmann::json& j, const std::string& where);
  static ResNetConfig from_dir(const std::string& dir);
  nlohmann::json to_json() const;
  void validate() const;
  int64_t num_features() const { return 512 * expansion; }
  // The bottleneck width of a stage with `planes` planes.
  int64_t width(int64_t planes) const { return planes * base_width / 64; }
};

// conv1 (1x1) -> bn1 -> relu -> conv2 (3x3, stride) -> bn2 -> relu -> conv3 (1x1) -> bn3, plus the
// shortcut (downsample.0 1x1 conv + downsample.1 BatchNorm when the shape changes), -> relu.
class BottleneckImpl : public torch::nn::Module {
 public:
  BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride, const ResNetConfig& c);
  torch::Tensor forward(
      const torch::Tensor& x);  // [B, inplanes, H, W] -> [B, planes * expansion, H/s, W/s]

  Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};

 private:
  struct DownsampleImpl
      : torch::nn::Module {  // children "0" (conv) and "1" (norm), as nn.Sequential
    Conv2d conv{nullptr};
    BatchNorm2d norm{nullptr};
  };
  std::shared_ptr<DownsampleImpl> downsample_;
};
TORCH_MODULE(Bottleneck);

class ResNetImpl : public ImageClassifierImpl {
 public:
  explicit ResNetImpl(const ResNetConfig& c);
  // A timm checkpoint directory (config.json + model.safetensors). num_labels > 0 and different
  // from the checkpoint's: a new fc (seeded) replaces the checkpoint's.
  static std::shared_ptr<ResNetImpl> from_pretrained(const std::string& dir, int64_t num_labels = 0,
                                                     uint64_t seed = 0);
  // [B, 3, H, W] -> logits [B, num_classes]; features (optional) receives the pooled [B,
  // num_features].
  torch::Tensor forward(const torch::Tensor& pixel_values, torch::Tensor* features = nullptr);
  torch::Tensor logits(const torch::Tensor& pixel_values) override { return forward(pixel_values); }
  // fc = Linear(num_features, n) with torch.nn.Linear's initialisation: U(-1/sqrt(in), 1/sqrt(in)).
  void reset_classifier(int64_t n, uint64_t seed) override;
  void save_pretrained(const std::string& dir) const override;
  std::string arch() const override { return cfg_.timm.architecture; }
  int64_t num_labels() const override { return cfg_.timm.num_classes; }
  const ResNetConfig& config() const { return cfg_; }

  Conv2d conv1{nullptr};
  BatchNorm2d bn1{nullptr};
  std::vector<torch::nn::ModuleList> stages;  // layer1 .. layer4
  Linear fc{nullptr};

 private:
  ResNetConfig cfg_;
};
TORCH_MODULE(ResNet);

}  // namespace emovlm
