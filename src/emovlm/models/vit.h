// ViT for image classification (the teacher), loading Hugging Face checkpoints
// (google/vit-base-patch16-384 names: vit.embeddings.*, vit.encoder.layer.N.*, vit.layernorm,
// classifier), with position-embedding interpolation for other input sizes.
#pragma once

#include <torch/torch.h>

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/models/image_classifier.h"
#include "emovlm/models/layers.h"

namespace emovlm {

struct VitConfig {
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";
  double layer_norm_eps = 1e-12;
  int64_t image_size = 384;
  int64_t patch_size = 16;
  int64_t num_channels = 3;
  bool qkv_bias = true;
  int64_t num_labels = 1000;
  double hidden_dropout_prob = 0.0;
  std::vector<std::string> id2label;  // optional names (index order)

  static VitConfig from_json(const nlohmann::json& j, const std::string& where);
  static VitConfig from_dir(const std::string& dir);
  nlohmann::json to_json() const;
  void validate() const;
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

class VitEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit VitEmbeddingsImpl(const VitConfig& c);
  // [B, 3, H, W] -> [B, 1 + (H/P)(W/P), D]; position embeddings interpolated when H, W differ.
  torch::Tensor forward(const torch::Tensor& pixel_values);
  torch::Tensor cls_token, position_embeddings;

 private:
  struct PatchEmbeddingsImpl : torch::nn::Module {
    struct ProjImpl : torch::nn::Module {
      torch::Tensor weight, bias;
    };
    std::shared_ptr<ProjImpl> projection;
  };
  std::shared_ptr<PatchEmbeddingsImpl> patch_;
  VitConfig cfg_;
};
TORCH_MODULE(VitEmbeddings);

class VitLayerImpl : public torch::nn::Module {
 public:
  explicit VitLayerImpl(const VitConfig& c);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  // attention.attention.{query,key,value}, attention.output.dense, intermediate.dense, output.dense
  struct SelfAttnImpl : torch::nn::Module {
    Linear query{nullptr}, key{nullptr}, value{nullptr};
  };
  struct DenseImpl : torch::nn::Module {
    Linear dense{nullptr};
  };
  struct AttentionImpl : torch::nn::Module {
    std::shared_ptr<SelfAttnImpl> attention;
    std::shared_ptr<DenseImpl> output;
  };
  std::shared_ptr<AttentionImpl> attention_;
  std::shared_ptr<DenseImpl> intermediate_, output_;
  LayerNorm layernorm_before_{nullptr}, layernorm_after_{nullptr};
  int64_t heads_, head_dim_;
  std::string act_;
  double dropout_;
};
TORCH_MODULE(VitLayer);

class VitForImageClassificationImpl : public ImageClassifierImpl {
 public:
  explicit VitForImageClassificationImpl(const VitConfig& c);
  // A checkpoint directory (config.json + safetensors). num_labels > 0 and different from the
  // checkpoint's: a new classifier (random, seeded) replaces the checkpoint's.
  static std::shared_ptr<VitForImageClassificationImpl> from_pretrained(const std::string& dir,
                                                                        int64_t num_labels = 0,
                                                                        uint64_t seed = 0);
  // [B, 3, H, W] -> logits [B, num_labels]; cls (optional) receives the final-norm CLS token [B,
  // D].
  torch::Tensor forward(const torch::Tensor& pixel_values, torch::Tensor* cls = nullptr);
  torch::Tensor logits(const torch::Tensor& pixel_values) override { return forward(pixel_values); }
  // Replaces the classifier with Linear(hidden, n) (initialised N(0, 0.02), zero bias).
  void reset_classifier(int64_t n, uint64_t seed) override;
  // Writes config.json + model.safetensors (HF names) into dir.
  void save_pretrained(const std::string& dir) const override;
  std::string arch() const override { return "vit"; }
  int64_t num_labels() const override { return cfg_.num_labels; }
  const VitConfig& config() const { return cfg_; }

  Linear classifier{nullptr};

 private:
  struct VitImpl : torch::nn::Module {
    VitEmbeddings embeddings{nullptr};
    struct EncoderImpl : torch::nn::Module {
      torch::nn::ModuleList layer{nullptr};
    };
    std::shared_ptr<EncoderImpl> encoder;
    LayerNorm layernorm{nullptr};
  };
  std::shared_ptr<VitImpl> vit_;
  VitConfig cfg_;
};
TORCH_MODULE(VitForImageClassification);

}  // namespace emovlm
