// VGG.
#include "emovlm/models/vgg.h"

#include <cmath>
#include <filesystem>
#include <map>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/weights.h"

namespace emovlm {

namespace {

constexpr int64_t M = 0;  // a max pool in a layer list

// The VGG paper's configurations A, B, D, E.
const std::map<std::string, std::vector<int64_t>>& layer_lists() {
  static const std::map<std::string, std::vector<int64_t>> d = {
      {"vgg11", {64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M}},
      {"vgg13", {64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M}},
      {"vgg16", {64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M}},
      {"vgg19", {64,  64,  M,   128, 128, M,   256, 256, 256, 256, M,
                 512, 512, 512, 512, M,   512, 512, 512, 512, M}}};
  return d;
}

std::string base_arch(const std::string& arch) {
  const std::string bn = "_bn";
  const bool with_bn =
      arch.size() > bn.size() && arch.compare(arch.size() - bn.size(), bn.size(), bn) == 0;
  return with_bn ? arch.substr(0, arch.size() - bn.size()) : arch;
}

}  // namespace

// ------------------------------------------------------------------------------------ config

VggConfig VggConfig::from_json(const json& j, const std::string& where) {
  VggConfig c;
  c.timm = TimmConfig::from_json(j, where);
  const std::string base = base_arch(c.timm.architecture);
  auto it = layer_lists().find(base);
  if (it == layer_lists().end())
    throw Error(
        cat(where, ": architecture '", c.timm.architecture,
            "' is not a VGG this project builds (vgg11, vgg13, vgg16, vgg19, each also with _bn)"));
  c.cfg = it->second;
  c.batch_norm = base != c.timm.architecture;
  const json& m = c.timm.model_args;
  const std::string mw = where + ": model_args";
  for (auto a = m.begin(); a != m.end(); ++a)
    if (a.key() != "cfg" && a.key() != "num_features" && a.key() != "drop_rate")
      throw Error(
          cat(mw, ": '", a.key(), "' is not supported for a VGG (cfg, num_features, drop_rate)"));
  if (m.contains("cfg")) {
    if (!m["cfg"].is_array()) throw Error(cat(mw, ": cfg must be a list of widths and \"M\""));
    c.cfg.clear();
    for (const auto& v : m["cfg"]) {
      if (v.is_string() && v.get<std::string>() == "M")
        c.cfg.push_back(M);
      else if (v.is_number_integer() && v.get<int64_t>() > 0)
        c.cfg.push_back(v.get<int64_t>());
      else
        throw Error(cat(mw, ": cfg entries must be positive widths or \"M\", not ", v.dump()));
    }
  }
  c.num_features = json_optional<int64_t>(m, "num_features", c.num_features, mw);
  c.drop_rate = json_optional<double>(m, "drop_rate", c.drop_rate, mw);
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(cat(where, ": ", e.what()));
  }
  return c;
}

VggConfig VggConfig::from_dir(const std::string& dir) {
  const std::string p = (std::filesystem::path(dir) / "config.json").string();
  return from_json(read_json_file(p), p);
}

json VggConfig::to_json() const {
  TimmConfig t = timm;
  t.model_args = json::object();
  auto it = layer_lists().find(base_arch(timm.architecture));
  if (it == layer_lists().end() || cfg != it->second) {
    json l = json::array();
    for (int64_t v : cfg) l.push_back(v == M ? json("M") : json(v));
    t.model_args["cfg"] = l;
  }
  if (num_features != 4096) t.model_args["num_features"] = num_features;
  if (drop_rate != 0.5) t.model_args["drop_rate"] = drop_rate;
  return t.to_json(num_features);
}

void VggConfig::validate() const {
  check(out_channels() > 0, "VGG: cfg needs at least one convolution");
  check(num_features > 0, cat("VGG: num_features must be positive, not ", num_features));
  check(timm.num_classes > 0, cat("VGG: num_classes must be positive, not ", timm.num_classes));
  check(drop_rate >= 0 && drop_rate < 1, cat("VGG: drop_rate must be in [0, 1), not ", drop_rate));
}

int64_t VggConfig::out_channels() const {
  int64_t c = 0;
  for (int64_t v : cfg)
    if (v != M) c = v;
  return c;
}

// ------------------------------------------------------------------------------------ model

VggImpl::VggImpl(const VggConfig& c) : cfg_(c) {
  c.validate();
  features_ = register_module("features", std::make_shared<FeaturesImpl>());
  int64_t index = 0, in = 3;  // the nn.Sequential index: conv [, norm], relu; or pool
  for (int64_t v : c.cfg) {
    Step s;
    if (v == M) {
      index += 1;
    } else {
      s.conv = features_->register_module(std::to_string(index), Conv2d(in, v, 3, 1, 1, true));
      if (c.batch_norm)
        s.norm = features_->register_module(std::to_string(index + 1),
                                            BatchNorm2d(v, c.bn_eps, c.bn_momentum));
      index += c.batch_norm ? 3 : 2;
      in = v;
    }
    steps_.push_back(s);
  }
  pre_logits_ = register_module("pre_logits", std::make_shared<PreLogitsImpl>());
  pre_logits_->fc1 =
      pre_logits_->register_module("fc1", Conv2d(in, c.num_features, c.pool_size, 1, 0, true));
  pre_logits_->fc2 =
      pre_logits_->register_module("fc2", Conv2d(c.num_features, c.num_features, 1, 1, 0, true));
  head_ = register_module("head", std::make_shared<HeadImpl>());
  head_->fc = head_->register_module("fc", Linear(c.num_features, c.timm.num_classes, true));
}

torch::Tensor VggImpl::forward(const torch::Tensor& pixel_values, torch::Tensor* features) {
  torch::Tensor x = pixel_values.to(head_->fc->weight.scalar_type());
  for (Step& s : steps_) {
    if (!s.conv) {
      x = torch::max_pool2d(x, {2, 2}, {2, 2});  // [B, C, H, W] -> [B, C, H/2, W/2]
      continue;
    }
    x = s.conv(x);
    if (s.norm) x = s.norm(x);
    x = torch::relu(x);
  }
  // [B, C, h, w] -> [B, C, 7, 7] -> [B, C * 49]; fc1's weight [F, C, 7, 7] -> [F, C * 49] in the
  // same order
  x = torch::adaptive_avg_pool2d(x, {cfg_.pool_size, cfg_.pool_size}).flatten(1);
  auto& p = *pre_logits_;
  x = torch::relu(torch::linear(x, p.fc1->weight.flatten(1), p.fc1->bias));
  if (cfg_.drop_rate > 0) x = torch::dropout(x, cfg_.drop_rate, is_training());
  x = torch::relu(
      torch::linear(x, p.fc2->weight.flatten(1), p.fc2->bias));  // [F, F, 1, 1] -> [F, F]
  if (cfg_.drop_rate > 0) x = torch::dropout(x, cfg_.drop_rate, is_training());
  if (features) *features = x;
  return head_->fc(x);
}

void VggImpl::reset_classifier(int64_t n, uint64_t seed) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t in = cfg_.num_features;
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  auto opts = head_->fc->weight.options();
  Linear fresh(in, n, true);
  fresh->weight.set_data(torch::empty({n, in}).uniform_(-bound, bound, gen).to(opts));
  fresh->bias.set_data(torch::empty({n}).uniform_(-bound, bound, gen).to(opts));
  head_->fc = head_->replace_module("fc", fresh);
  cfg_.timm.num_classes = n;
  cfg_.timm.label_names.clear();
}

std::shared_ptr<VggImpl> VggImpl::from_pretrained(const std::string& dir, int64_t num_labels,
                                                  uint64_t seed) {
  const std::string cpath = (std::filesystem::path(dir) / "config.json").string();
  VggConfig cfg = VggConfig::from_json(read_timm_config_json(dir, num_labels), cpath);
  auto m = std::make_shared<VggImpl>(cfg);
  const bool has_head = load_timm_weights(*m, dir, "head.fc.");
  if (!has_head || (num_labels > 0 && num_labels != cfg.timm.num_classes))
    m->reset_classifier(num_labels > 0 ? num_labels : cfg.timm.num_classes, seed);
  return m;
}

void VggImpl::save_pretrained(const std::string& dir) const {
  save_timm_checkpoint(*this, dir, cfg_.to_json());
}

}  // namespace emovlm
