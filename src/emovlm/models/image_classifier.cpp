// Image classifiers of any architecture: loading, preprocessing, timm's config.json.
#include "emovlm/models/image_classifier.h"

#include <algorithm>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/resnet.h"
#include "emovlm/models/vgg.h"
#include "emovlm/models/vit.h"
#include "emovlm/models/weights.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {
int pil_number(Filter f) {  // Pillow's numbering, as preprocessor_config.json has it
  switch (f) {
    case Filter::Nearest:
      return 0;
    case Filter::Lanczos:
      return 1;
    case Filter::Bilinear:
      return 2;
    case Filter::Bicubic:
      return 3;
  }
  return 2;
}
}  // namespace

int64_t ImageClassifierImpl::num_parameters() const {
  return count_parameters(*this);
}

const std::vector<std::string>& classifier_archs() {
  static const std::vector<std::string> a = {"vit",   "resnet50", "resnet101", "resnet152",
                                             "vgg11", "vgg11_bn", "vgg13",     "vgg13_bn",
                                             "vgg16", "vgg16_bn", "vgg19",     "vgg19_bn"};
  return a;
}

std::string classifier_display_name(const std::string& arch) {
  if (arch == "vit") return "ViT";
  if (arch.rfind("resnet", 0) == 0) return "ResNet" + arch.substr(6);
  if (arch.rfind("vgg", 0) == 0) {
    std::string s = "VGG" + arch.substr(3);
    const size_t bn = s.find("_bn");
    return bn == std::string::npos ? s : s.substr(0, bn) + "-BN";
  }
  return arch;
}

std::string classifier_arch(const std::string& dir) {
  const std::string p = (fs::path(dir) / "config.json").string();
  if (!file_exists(p)) throw Error(cat(dir, ": not a checkpoint directory (no config.json)"));
  const json j = read_json_file(p);
  std::string arch;
  if (j.value("model_type", "") == "vit")
    arch = "vit";
  else if (j.contains("architecture") && j["architecture"].is_string())
    arch = j["architecture"].get<std::string>();
  else
    throw Error(cat(
        p, ": neither a Hugging Face ViT (model_type vit) nor a timm checkpoint (architecture)"));
  const auto& all = classifier_archs();
  if (std::find(all.begin(), all.end(), arch) == all.end()) {
    std::string names;
    for (const auto& a : all) names += (names.empty() ? "" : ", ") + a;
    throw Error(cat(p, ": architecture '", arch, "' is not one this project builds (", names, ")"));
  }
  return arch;
}

std::shared_ptr<ImageClassifierImpl> load_image_classifier(const std::string& dir,
                                                           int64_t num_labels, uint64_t seed) {
  const std::string arch = classifier_arch(dir);
  if (arch == "vit") return VitForImageClassificationImpl::from_pretrained(dir, num_labels, seed);
  if (arch.rfind("resnet", 0) == 0) return ResNetImpl::from_pretrained(dir, num_labels, seed);
  return VggImpl::from_pretrained(dir, num_labels, seed);
}

VitImageConfig classifier_image_config(const std::string& dir) {
  if (classifier_arch(dir) == "vit") {
    VitImageConfig c = VitImageConfig::from_dir(dir);
    c.mode = VitResizeMode::ResizeCenterCrop;
    return c;
  }
  const std::string p = (fs::path(dir) / "config.json").string();
  const json j = read_json_file(p);
  if (!j.contains("pretrained_cfg"))
    throw Error(cat(p, ": missing field 'pretrained_cfg' (the preprocessing)"));
  return VitImageConfig::from_timm(j["pretrained_cfg"], p + ": pretrained_cfg");
}

void write_classifier_image_config(const std::string& dir, const VitImageConfig& image) {
  if (classifier_arch(dir) == "vit") {
    json pre = {{"do_resize", true},
                {"size", {{"height", image.image_size}, {"width", image.image_size}}},
                {"resample", pil_number(image.resample)},
                {"do_rescale", true},
                {"rescale_factor", 1.0 / 255},
                {"do_normalize", true},
                {"image_mean", image.image_mean},
                {"image_std", image.image_std},
                {"image_processor_type", "ViTImageProcessor"}};
    write_file_atomic((fs::path(dir) / "preprocessor_config.json").string(), pre.dump(1) + "\n");
    return;
  }
  const std::string p = (fs::path(dir) / "config.json").string();
  json j = read_json_file(p);
  const json fields = image.to_timm();
  for (const auto& [k, v] : fields.items()) j["pretrained_cfg"][k] = v;
  write_file_atomic(p, j.dump(1) + "\n");
}

// ------------------------------------------------------------------------------- timm config

TimmConfig TimmConfig::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) throw Error(cat(where, ": not a JSON object"));
  TimmConfig c;
  c.architecture = json_required<std::string>(j, "architecture", where);
  c.num_classes = json_optional<int64_t>(j, "num_classes", c.num_classes, where);
  if (j.contains("pretrained_cfg")) {
    if (!j["pretrained_cfg"].is_object())
      throw Error(cat(where, ": pretrained_cfg must be an object"));
    c.pretrained_cfg = j["pretrained_cfg"];
  }
  if (j.contains("model_args")) {
    if (!j["model_args"].is_object()) throw Error(cat(where, ": model_args must be an object"));
    c.model_args = j["model_args"];
  }
  c.label_names = json_optional<std::vector<std::string>>(j, "label_names", {}, where);
  return c;
}

TimmConfig TimmConfig::from_dir(const std::string& dir) {
  const std::string p = (fs::path(dir) / "config.json").string();
  return from_json(read_json_file(p), p);
}

json TimmConfig::to_json(int64_t num_features) const {
  json pc = pretrained_cfg;
  pc["num_classes"] = num_classes;
  json j = {{"architecture", architecture},
            {"num_classes", num_classes},
            {"num_features", num_features},
            {"pretrained_cfg", pc}};
  if (!label_names.empty()) j["label_names"] = label_names;
  if (!model_args.empty()) j["model_args"] = model_args;
  return j;
}

json read_timm_config_json(const std::string& dir, int64_t num_labels) {
  const std::string cpath = (fs::path(dir) / "config.json").string();
  json j = read_json_file(cpath);
  if (json_optional<int64_t>(j, "num_classes", 1000, cpath) ==
      0) {  // a backbone without a classifier: built with the labels asked for
    if (num_labels <= 0)
      throw Error(
          cat(cpath, ": the checkpoint has no classifier (num_classes 0); give the labels"));
    j["num_classes"] = num_labels;
  }
  return j;
}

bool load_timm_weights(torch::nn::Module& m, const std::string& dir,
                       const std::string& head_prefix) {
  Checkpoint ck(dir);
  LoadOptions opt;
  opt.dtype = torch::kFloat32;
  const bool has_head = ck.contains(head_prefix + "weight");
  opt.optional = [has_head, head_prefix](const std::string& n) {
    return (!has_head && n.rfind(head_prefix, 0) == 0) ||
           n.find("num_batches_tracked") != std::string::npos;
  };
  load_weights(m, ck, opt);
  torch::NoGradGuard ng;
  for (auto& p : m.parameters()) p.set_data(p.detach().clone());
  for (auto& b : m.buffers()) b.set_data(b.detach().clone());
  return has_head;
}

void save_timm_checkpoint(const torch::nn::Module& m, const std::string& dir, const json& config) {
  make_dirs(dir);
  save_weights(m, (fs::path(dir) / "model.safetensors").string(), {{"format", "pt"}});
  write_file_atomic((fs::path(dir) / "config.json").string(), config.dump(1) + "\n");
}

}  // namespace emovlm
