// ResNet with bottleneck blocks.
#include "emovlm/models/resnet.h"

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

// Blocks per stage of the bottleneck ResNets timm and torchvision name.
const std::map<std::string, std::vector<int64_t>>& depths() {
  static const std::map<std::string, std::vector<int64_t>> d = {
      {"resnet50", {3, 4, 6, 3}}, {"resnet101", {3, 4, 23, 3}}, {"resnet152", {3, 8, 36, 3}}};
  return d;
}

const int64_t kPlanes[4] = {64, 128, 256, 512};

}  // namespace

// ------------------------------------------------------------------------------------ config

ResNetConfig ResNetConfig::from_json(const json& j, const std::string& where) {
  ResNetConfig c;
  c.timm = TimmConfig::from_json(j, where);
  auto it = depths().find(c.timm.architecture);
  if (it == depths().end())
    throw Error(
        cat(where, ": architecture '", c.timm.architecture,
            "' is not a bottleneck ResNet this project builds (resnet50, resnet101, resnet152)"));
  c.layers = it->second;
  const json& m = c.timm.model_args;
  const std::string mw = where + ": model_args";
  for (auto a = m.begin(); a != m.end(); ++a)
    if (a.key() != "layers" && a.key() != "base_width" && a.key() != "expansion" &&
        a.key() != "drop_rate")
      throw Error(
          cat(mw, ": '", a.key(),
              "' is not supported for a ResNet (layers, base_width, expansion, drop_rate)"));
  c.layers = json_optional<std::vector<int64_t>>(m, "layers", c.layers, mw);
  c.base_width = json_optional<int64_t>(m, "base_width", c.base_width, mw);
  c.expansion = json_optional<int64_t>(m, "expansion", c.expansion, mw);
  c.drop_rate = json_optional<double>(m, "drop_rate", c.drop_rate, mw);
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(cat(where, ": ", e.what()));
  }
  return c;
}

ResNetConfig ResNetConfig::from_dir(const std::string& dir) {
  const std::string p = (std::filesystem::path(dir) / "config.json").string();
  return from_json(read_json_file(p), p);
}

json ResNetConfig::to_json() const {
  TimmConfig t = timm;
  t.model_args = json::object();
  auto it = depths().find(timm.architecture);
  if (it == depths().end() || layers != it->second) t.model_args["layers"] = layers;
  if (base_width != 64) t.model_args["base_width"] = base_width;
  if (expansion != 4) t.model_args["expansion"] = expansion;
  if (drop_rate != 0) t.model_args["drop_rate"] = drop_rate;
  return t.to_json(num_features());
}

void ResNetConfig::validate() const {
  check(layers.size() == 4, cat("ResNet: layers must list 4 stages, not ", layers.size()));
  for (int64_t n : layers) check(n > 0, "ResNet: every stage needs at least one block");
  check(base_width > 0, cat("ResNet: base_width must be positive, not ", base_width));
  check(expansion > 0, cat("ResNet: expansion must be positive, not ", expansion));
  check(timm.num_classes > 0, cat("ResNet: num_classes must be positive, not ", timm.num_classes));
  check(drop_rate >= 0 && drop_rate < 1,
        cat("ResNet: drop_rate must be in [0, 1), not ", drop_rate));
}

// ---------------------------------------------------------------------------------- modules

BottleneckImpl::BottleneckImpl(int64_t inplanes, int64_t planes, int64_t stride,
                               const ResNetConfig& c) {
  const int64_t width = c.width(planes), out = planes * c.expansion;
  conv1 = register_module("conv1", Conv2d(inplanes, width, 1, 1, 0, false));
  bn1 = register_module("bn1", BatchNorm2d(width, c.bn_eps, c.bn_momentum));
  conv2 = register_module("conv2", Conv2d(width, width, 3, stride, 1, false));
  bn2 = register_module("bn2", BatchNorm2d(width, c.bn_eps, c.bn_momentum));
  conv3 = register_module("conv3", Conv2d(width, out, 1, 1, 0, false));
  bn3 = register_module("bn3", BatchNorm2d(out, c.bn_eps, c.bn_momentum));
  if (stride != 1 || inplanes != out) {
    downsample_ = register_module("downsample", std::make_shared<DownsampleImpl>());
    downsample_->conv =
        downsample_->register_module("0", Conv2d(inplanes, out, 1, stride, 0, false));
    downsample_->norm =
        downsample_->register_module("1", BatchNorm2d(out, c.bn_eps, c.bn_momentum));
  }
}

torch::Tensor BottleneckImpl::forward(const torch::Tensor& x) {
  torch::Tensor h = torch::relu(bn1(conv1(x)));
  h = torch::relu(bn2(conv2(h)));
  h = bn3(conv3(h));
  const torch::Tensor shortcut = downsample_ ? downsample_->norm(downsample_->conv(x)) : x;
  return torch::relu(h + shortcut);
}

ResNetImpl::ResNetImpl(const ResNetConfig& c) : cfg_(c) {
  c.validate();
  conv1 = register_module("conv1", Conv2d(3, 64, 7, 2, 3, false));
  bn1 = register_module("bn1", BatchNorm2d(64, c.bn_eps, c.bn_momentum));
  int64_t inplanes = 64;
  for (int s = 0; s < 4; ++s) {
    auto stage = register_module("layer" + std::to_string(s + 1), torch::nn::ModuleList());
    for (int64_t b = 0; b < c.layers[s]; ++b) {
      stage->push_back(Bottleneck(inplanes, kPlanes[s], b == 0 && s > 0 ? 2 : 1, c));
      inplanes = kPlanes[s] * c.expansion;
    }
    stages.push_back(stage);
  }
  fc = register_module("fc", Linear(c.num_features(), c.timm.num_classes, true));
}

torch::Tensor ResNetImpl::forward(const torch::Tensor& pixel_values, torch::Tensor* features) {
  // [B, 3, H, W] -> [B, 64, H/2, W/2] -> [B, 64, H/4, W/4]
  torch::Tensor x = torch::relu(bn1(conv1(pixel_values.to(conv1->weight.scalar_type()))));
  x = torch::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
  for (const auto& stage : stages)
    for (const auto& block : *stage) x = block->as<BottleneckImpl>()->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);  // [B, C, h, w] -> [B, C]
  if (features) *features = x;
  if (cfg_.drop_rate > 0) x = torch::dropout(x, cfg_.drop_rate, is_training());
  return fc(x);
}

void ResNetImpl::reset_classifier(int64_t n, uint64_t seed) {
  torch::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  const int64_t in = cfg_.num_features();
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  Linear fresh(in, n, true);
  fresh->weight.set_data(
      torch::empty({n, in}).uniform_(-bound, bound, gen).to(fc->weight.options()));
  fresh->bias.set_data(torch::empty({n}).uniform_(-bound, bound, gen).to(fc->weight.options()));
  fc = replace_module("fc", fresh);
  cfg_.timm.num_classes = n;
  cfg_.timm.label_names.clear();
}

std::shared_ptr<ResNetImpl> ResNetImpl::from_pretrained(const std::string& dir, int64_t num_labels,
                                                        uint64_t seed) {
  const std::string cpath = (std::filesystem::path(dir) / "config.json").string();
  ResNetConfig cfg = ResNetConfig::from_json(read_timm_config_json(dir, num_labels), cpath);
  auto m = std::make_shared<ResNetImpl>(cfg);
  const bool has_fc = load_timm_weights(*m, dir, "fc.");
  if (!has_fc || (num_labels > 0 && num_labels != cfg.timm.num_classes))
    m->reset_classifier(num_labels > 0 ? num_labels : cfg.timm.num_classes, seed);
  return m;
}

void ResNetImpl::save_pretrained(const std::string& dir) const {
  save_timm_checkpoint(*this, dir, cfg_.to_json());
}

}  // namespace emovlm
