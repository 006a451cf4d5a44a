// ViT for image classification.
#include "emovlm/models/vit.h"

#include <cstring>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/models/weights.h"

namespace emovlm {

// ------------------------------------------------------------------------------------ config

VitConfig VitConfig::from_json(const json& j, const std::string& where) {
  VitConfig c;
  c.hidden_size = json_optional<int64_t>(j, "hidden_size", c.hidden_size, where);
  c.num_hidden_layers = json_optional<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, where);
  c.num_attention_heads =
      json_optional<int64_t>(j, "num_attention_heads", c.num_attention_heads, where);
  c.intermediate_size = json_optional<int64_t>(j, "intermediate_size", c.intermediate_size, where);
  c.hidden_act = json_optional<std::string>(j, "hidden_act", c.hidden_act, where);
  c.layer_norm_eps = json_optional<double>(j, "layer_norm_eps", c.layer_norm_eps, where);
  c.image_size = json_optional<int64_t>(j, "image_size", c.image_size, where);
  c.patch_size = json_optional<int64_t>(j, "patch_size", c.patch_size, where);
  c.num_channels = json_optional<int64_t>(j, "num_channels", c.num_channels, where);
  c.qkv_bias = json_optional<bool>(j, "qkv_bias", c.qkv_bias, where);
  c.hidden_dropout_prob =
      json_optional<double>(j, "hidden_dropout_prob", c.hidden_dropout_prob, where);
  if (j.contains("id2label") && j["id2label"].is_object()) {
    c.id2label.assign(j["id2label"].size(), "");
    for (auto it = j["id2label"].begin(); it != j["id2label"].end(); ++it) {
      size_t i = std::stoul(it.key());
      if (i >= c.id2label.size()) throw Error(cat(where, ": id2label index ", i, " out of range"));
      c.id2label[i] = it.value().get<std::string>();
    }
    c.num_labels = static_cast<int64_t>(c.id2label.size());
  }
  c.num_labels = json_optional<int64_t>(j, "num_labels", c.num_labels, where);
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(cat(where, ": ", e.what()));
  }
  return c;
}

VitConfig VitConfig::from_dir(const std::string& dir) {
  std::string p = (std::filesystem::path(dir) / "config.json").string();
  return from_json(read_json_file(p), p);
}

json VitConfig::to_json() const {
  json j = {{"model_type", "vit"},
            {"architectures", {"ViTForImageClassification"}},
            {"hidden_size", hidden_size},
            {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads},
            {"intermediate_size", intermediate_size},
            {"hidden_act", hidden_act},
            {"layer_norm_eps", layer_norm_eps},
            {"image_size", image_size},
            {"patch_size", patch_size},
            {"num_channels", num_channels},
            {"qkv_bias", qkv_bias},
            {"hidden_dropout_prob", hidden_dropout_prob},
            {"attention_probs_dropout_prob", 0.0}};
  json id2label = json::object(), label2id = json::object();
  for (int64_t i = 0; i < num_labels; ++i) {
    const bool named =
        i < static_cast<int64_t>(this->id2label.size()) && !this->id2label[i].empty();
    const std::string name = named ? this->id2label[i] : "LABEL_" + std::to_string(i);
    id2label[std::to_string(i)] = name;
    label2id[name] = i;
  }
  j["id2label"] = id2label;
  j["label2id"] = label2id;
  return j;
}

void VitConfig::validate() const {
  constexpr int64_t kMaxWidth = int64_t{1} << 20;
  check_range(hidden_size, 1, kMaxWidth, "ViT: hidden_size");
  check_range(num_hidden_layers, 1, 4096, "ViT: num_hidden_layers");
  check_range(num_attention_heads, 1, kMaxWidth, "ViT: num_attention_heads");
  check_range(intermediate_size, 1, kMaxWidth, "ViT: intermediate_size");
  check_range(image_size, 1, 16384, "ViT: image_size");
  check_range(patch_size, 1, 1024, "ViT: patch_size");
  check_range(num_channels, 1, 16, "ViT: num_channels");
  check_range(num_labels, 1, 1 << 20, "ViT: num_labels");
  check_positive_finite(layer_norm_eps, 1, "ViT: layer_norm_eps");
  check(hidden_dropout_prob >= 0 && hidden_dropout_prob < 1,
        cat("ViT: hidden_dropout_prob ", hidden_dropout_prob, " must be in [0, 1)"));
  check(hidden_size > 0 && num_attention_heads > 0 && hidden_size % num_attention_heads == 0,
        cat("ViT: hidden_size ", hidden_size,
            " must be a positive multiple of num_attention_heads ", num_attention_heads));
  check(patch_size > 0 && image_size % patch_size == 0,
        cat("ViT: image_size ", image_size, " must be a multiple of patch_size ", patch_size));
  check(num_labels > 0 && num_hidden_layers > 0 && intermediate_size > 0,
        "ViT: sizes must be positive");
}

// ---------------------------------------------------------------------------------- modules

VitEmbeddingsImpl::VitEmbeddingsImpl(const VitConfig& c) : cfg_(c) {
  cls_token = register_parameter("cls_token", torch::zeros({1, 1, c.hidden_size}));
  position_embeddings = register_parameter("position_embeddings",
                                           torch::zeros({1, c.num_patches() + 1, c.hidden_size}));
  patch_ = register_module("patch_embeddings", std::make_shared<PatchEmbeddingsImpl>());
  patch_->projection =
      patch_->register_module("projection", std::make_shared<PatchEmbeddingsImpl::ProjImpl>());
  auto& p = *patch_->projection;
  p.weight = p.register_parameter(
      "weight", torch::empty({c.hidden_size, c.num_channels, c.patch_size, c.patch_size}));
  p.bias = p.register_parameter("bias", torch::zeros({c.hidden_size}));
}

torch::Tensor VitEmbeddingsImpl::forward(const torch::Tensor& px) {
  const int64_t B = px.size(0), H = px.size(2), W = px.size(3), P = cfg_.patch_size;
  if (H % P || W % P)
    throw Error(cat("ViT: input ", H, "x", W, " is not a multiple of the patch size ", P));
  auto& proj = *patch_->projection;
  // [B, 3, H, W] -> [B, D, H/P, W/P] -> [B, N, D]
  torch::Tensor x = torch::conv2d(px.to(proj.weight.scalar_type()), proj.weight, proj.bias, {P, P});
  x = x.flatten(2).transpose(1, 2);
  x = torch::cat({cls_token.expand({B, 1, -1}), x}, 1);
  torch::Tensor pos = position_embeddings;
  const int64_t gh = H / P, gw = W / P, g0 = cfg_.image_size / P;
  if (gh != g0 || gw != g0) {
    // bicubic interpolation of the patch grid: [1, N, D] -> [1, D, g0, g0] -> [1, D, gh, gw] -> [1,
    // gh*gw, D]
    torch::Tensor grid = pos.narrow(1, 1, g0 * g0).reshape({1, g0, g0, -1}).permute({0, 3, 1, 2});
    grid = torch::nn::functional::interpolate(grid.to(torch::kFloat32),
                                              torch::nn::functional::InterpolateFuncOptions()
                                                  .size(std::vector<int64_t>{gh, gw})
                                                  .mode(torch::kBicubic)
                                                  .align_corners(false))
               .to(pos.scalar_type());
    pos =
        torch::cat({pos.narrow(1, 0, 1), grid.permute({0, 2, 3, 1}).reshape({1, gh * gw, -1})}, 1);
  }
  return x + pos;
}

VitLayerImpl::VitLayerImpl(const VitConfig& c)
    : heads_(c.num_attention_heads),
      head_dim_(c.hidden_size / c.num_attention_heads),
      act_(c.hidden_act),
      dropout_(c.hidden_dropout_prob) {
  const int64_t D = c.hidden_size;
  attention_ = register_module("attention", std::make_shared<AttentionImpl>());
  attention_->attention =
      attention_->register_module("attention", std::make_shared<SelfAttnImpl>());
  attention_->attention->query =
      attention_->attention->register_module("query", Linear(D, D, c.qkv_bias));
  attention_->attention->key =
      attention_->attention->register_module("key", Linear(D, D, c.qkv_bias));
  attention_->attention->value =
      attention_->attention->register_module("value", Linear(D, D, c.qkv_bias));
  attention_->output = attention_->register_module("output", std::make_shared<DenseImpl>());
  attention_->output->dense = attention_->output->register_module("dense", Linear(D, D, true));
  intermediate_ = register_module("intermediate", std::make_shared<DenseImpl>());
  intermediate_->dense =
      intermediate_->register_module("dense", Linear(D, c.intermediate_size, true));
  output_ = register_module("output", std::make_shared<DenseImpl>());
  output_->dense = output_->register_module("dense", Linear(c.intermediate_size, D, true));
  layernorm_before_ = register_module("layernorm_before", LayerNorm(D, c.layer_norm_eps));
  layernorm_after_ = register_module("layernorm_after", LayerNorm(D, c.layer_norm_eps));
}

torch::Tensor VitLayerImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1);
  auto& sa = *attention_->attention;
  torch::Tensor h = layernorm_before_(x);
  // [B, T, D] -> [B, T, H, hd] -> [B, H, T, hd]
  auto heads = [&](const torch::Tensor& t) {
    return t.view({B, T, heads_, head_dim_}).transpose(1, 2);
  };
  torch::Tensor a = compat::scaled_dot_product_attention(heads(sa.query(h)), heads(sa.key(h)),
                                                         heads(sa.value(h)));
  a = a.transpose(1, 2).reshape({B, T, heads_ * head_dim_});  // [B, H, T, hd] -> [B, T, D]
  a = attention_->output->dense(a);
  if (dropout_ > 0) a = torch::dropout(a, dropout_, is_training());
  torch::Tensor y = x + a;
  torch::Tensor m = output_->dense(activation(act_, intermediate_->dense(layernorm_after_(y))));
  if (dropout_ > 0) m = torch::dropout(m, dropout_, is_training());
  return y + m;
}

VitForImageClassificationImpl::VitForImageClassificationImpl(const VitConfig& c) : cfg_(c) {
  c.validate();
  vit_ = register_module("vit", std::make_shared<VitImpl>());
  vit_->embeddings = vit_->register_module("embeddings", VitEmbeddings(c));
  vit_->encoder = vit_->register_module("encoder", std::make_shared<VitImpl::EncoderImpl>());
  vit_->encoder->layer = vit_->encoder->register_module("layer", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) vit_->encoder->layer->push_back(VitLayer(c));
  vit_->layernorm = vit_->register_module("layernorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
  classifier = register_module("classifier", Linear(c.hidden_size, c.num_labels, true));
}

torch::Tensor VitForImageClassificationImpl::forward(const torch::Tensor& pixel_values,
                                                     torch::Tensor* cls) {
  torch::Tensor h = vit_->embeddings(pixel_values);
  for (const auto& l : *vit_->encoder->layer) h = l->as<VitLayerImpl>()->forward(h);
  h = vit_->layernorm(h);
  torch::Tensor c = h.select(1, 0);  // [B, T, D] -> [B, D]
  if (cls) *cls = c;
  return classifier(c);
}

void VitForImageClassificationImpl::reset_classifier(int64_t n, uint64_t seed) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  auto opts = classifier->weight.options();
  Linear fresh(cfg_.hidden_size, n, true);
  fresh->weight.set_data(at::normal(0.0, 0.02, {n, cfg_.hidden_size}, gen).to(opts));
  fresh->bias.set_data(torch::zeros({n}, opts));
  classifier = replace_module("classifier", fresh);
  cfg_.num_labels = n;
  cfg_.id2label.clear();
}

std::shared_ptr<VitForImageClassificationImpl> VitForImageClassificationImpl::from_pretrained(
    const std::string& dir, int64_t num_labels, uint64_t seed) {
  VitConfig cfg = VitConfig::from_dir(dir);
  auto m = std::make_shared<VitForImageClassificationImpl>(cfg);
  Checkpoint ck(dir);
  LoadOptions opt;
  opt.dtype = torch::kFloat32;
  // The published names (vit.encoder.layer.N.attention.attention.query, ...), the names
  // transformers 5 writes (vit.layers.N.attention.q_proj, mlp.fc1, ...), and backbone-only
  // checkpoints (ViTModel: no "vit." prefix; its pooler is unused).
  opt.candidates = [](const std::string& n) {
    std::vector<std::string> c{n};
    const std::string pre = "vit.encoder.layer.";
    if (n.rfind(pre, 0) == 0) {
      size_t dot = n.find('.', pre.size());
      std::string idx = n.substr(pre.size(), dot - pre.size()), rest = n.substr(dot + 1);
      static const std::pair<const char*, const char*> renames[] = {
          {"attention.attention.query.", "attention.q_proj."},
          {"attention.attention.key.", "attention.k_proj."},
          {"attention.attention.value.", "attention.v_proj."},
          {"attention.output.dense.", "attention.o_proj."},
          {"intermediate.dense.", "mlp.fc1."},
          {"output.dense.", "mlp.fc2."}};
      for (const auto& [from, to] : renames)
        if (rest.rfind(from, 0) == 0) rest = to + rest.substr(std::strlen(from));
      c.push_back("vit.layers." + idx + "." + rest);
    }
    for (size_t i = 0, n0 = c.size(); i < n0; ++i)
      if (c[i].rfind("vit.", 0) == 0) c.push_back(c[i].substr(4));
    return c;
  };
  const bool has_classifier = ck.contains("classifier.weight");
  opt.optional = [has_classifier](const std::string& n) {
    return !has_classifier && n.rfind("classifier.", 0) == 0;
  };
  opt.ignore_unused = [](const std::string& n) { return n.find("pooler.") != std::string::npos; };
  load_weights(*m, ck, opt);
  // weights are trained: own them (no aliasing of the read-only mapping)
  {
    torch::NoGradGuard ng;
    for (auto& p : m->parameters()) p.set_data(p.detach().clone());
  }
  if (!has_classifier || (num_labels > 0 && num_labels != cfg.num_labels))
    m->reset_classifier(num_labels > 0 ? num_labels : cfg.num_labels, seed);
  return m;
}

void VitForImageClassificationImpl::save_pretrained(const std::string& dir) const {
  make_dirs(dir);
  NamedTensors ts;
  for (const auto& p : named_parameters()) ts.emplace_back(p.key(), p.value());
  save_tensors((std::filesystem::path(dir) / "model.safetensors").string(), ts, {{"format", "pt"}});
  json j = cfg_.to_json();
  write_file_atomic((std::filesystem::path(dir) / "config.json").string(), j.dump(1) + "\n");
}

}  // namespace emovlm
