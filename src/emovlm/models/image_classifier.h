// The image classifiers the project trains as teachers (ViT, ResNet, VGG) behind one interface;
// the one function that loads a checkpoint directory of any of them; and timm's config.json
// envelope that the ResNet and VGG checkpoints share.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/image/preprocess.h"

namespace emovlm {

class ImageClassifierImpl : public torch::nn::Module {
 public:
  // [B, 3, H, W] normalised pixels -> logits [B, num_labels].
  virtual torch::Tensor logits(const torch::Tensor& pixel_values) = 0;
  // Replaces the classification layer with a freshly initialised one for n labels (seeded).
  virtual void reset_classifier(int64_t n, uint64_t seed) = 0;
  // Writes config.json + model.safetensors (the checkpoint's own key names) into dir.
  virtual void save_pretrained(const std::string& dir) const = 0;
  virtual std::string arch() const = 0;  // "vit", "resnet50", "vgg16", "vgg16_bn", ...
  virtual int64_t num_labels() const = 0;
  // Trainable parameters (BatchNorm's running statistics are buffers, not parameters).
  int64_t num_parameters() const;
};

// The architectures a teacher can have: vit, the bottleneck ResNets (resnet50, resnet101,
// resnet152) and the VGGs (vgg11, vgg13, vgg16, vgg19, each also with _bn).
const std::vector<std::string>& classifier_archs();
// The name Table 1 gives an architecture: ViT, ResNet50, VGG16, VGG16-BN, ...
std::string classifier_display_name(const std::string& arch);

// The architecture of a checkpoint directory: "vit" for a Hugging Face ViT (config.json with
// model_type vit), else timm's `architecture` field; an error naming config.json otherwise.
std::string classifier_arch(const std::string& dir);

// Loads a checkpoint directory of any supported architecture. num_labels > 0 and different from
// the checkpoint's: a new classification layer (seeded) replaces the checkpoint's. The weights are
// owned (copied out of the file mapping), ready for training.
std::shared_ptr<ImageClassifierImpl> load_image_classifier(const std::string& dir,
                                                           int64_t num_labels = 0,
                                                           uint64_t seed = 0);

// The evaluation preprocessing a classifier directory names: a ViT's preprocessor_config.json
// with the reference teacher's Resize + CenterCrop; a ResNet's or VGG's config.json pretrained_cfg.
VitImageConfig classifier_image_config(const std::string& dir);
// Records `image` in dir where classifier_image_config reads it (after save_pretrained).
void write_classifier_image_config(const std::string& dir, const VitImageConfig& image);

// The steps the timm-layout models (ResNet, VGG) share in from_pretrained/save_pretrained.
// DIR/config.json; a headless backbone (num_classes 0) is given num_labels classes (an error
// naming the file when num_labels is not positive).
nlohmann::json read_timm_config_json(const std::string& dir, int64_t num_labels);
// Fills m from DIR's checkpoint in float32 as owned tensors (trained: not aliasing the read-only
// file mapping). The classifier under head_prefix ("fc.", "head.fc.") may be absent, and so may
// num_batches_tracked (checkpoints converted from before PyTorch 0.4.1). Returns whether the
// checkpoint holds the classifier.
bool load_timm_weights(torch::nn::Module& m, const std::string& dir,
                       const std::string& head_prefix);
// DIR/model.safetensors (parameters and buffers under the checkpoint's names) and DIR/config.json.
void save_timm_checkpoint(const torch::nn::Module& m, const std::string& dir,
                          const nlohmann::json& config);

// timm's config.json: architecture, num_classes, num_features, pretrained_cfg (the preprocessing,
// kept as read), label_names, and model_args (overrides of the architecture's defaults: this
// project reads layers, base_width, expansion, cfg, num_features, drop_rate from it, for reduced
// models).
struct TimmConfig {
  std::string architecture;
  int64_t num_classes = 1000;
  nlohmann::json pretrained_cfg = nlohmann::json::object();
  nlohmann::json model_args = nlohmann::json::object();
  std::vector<std::string> label_names;

  static TimmConfig from_json(const nlohmann::json& j, const std::string& where);
  static TimmConfig from_dir(const std::string& dir);
  nlohmann::json to_json(int64_t num_features) const;
};

}  // namespace emovlm
