// The weight loader.
#include "emovlm/models/weights.h"

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"

namespace emovlm {

namespace {
std::string list(const std::vector<std::string>& names, size_t max = 12) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > max) s += cat(", ... (", names.size(), " in all)");
  return s;
}
}  // namespace

void load_weights(torch::nn::Module& module, const Checkpoint& ck, const LoadOptions& opt) {
  torch::NoGradGuard ng;
  std::vector<std::string> missing, mismatched;
  std::set<std::string> used;
  // parameters, then buffers (BatchNorm's running statistics): both are checkpoint tensors
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (auto& p : module.named_parameters(/*recurse=*/true))
    targets.emplace_back(p.key(), p.value());
  for (auto& b : module.named_buffers(/*recurse=*/true)) targets.emplace_back(b.key(), b.value());
  for (auto& [name, param] : targets) {
    std::vector<std::string> cands =
        opt.candidates ? opt.candidates(name) : std::vector<std::string>{name};
    const TensorView* view = nullptr;
    std::string found;
    for (const auto& c : cands) {
      if ((view = ck.find(c))) {
        found = c;
        break;
      }
    }
    if (!view) {
      if (!(opt.optional && opt.optional(name))) missing.push_back(name);
      continue;
    }
    used.insert(found);
    if (view->shape != param.sizes().vec()) {
      mismatched.push_back(cat(found, " ", shape_str(view->shape), " (expected ",
                               shape_str(param.sizes().vec()), ")"));
      continue;
    }
    torch::Tensor t = tensor_from_view(*view, ck.file_of(found));
    if (t.is_floating_point() && t.scalar_type() != opt.dtype) t = t.to(opt.dtype);
    if (t.device() != opt.device) t = t.to(opt.device);
    param.set_data(t);
  }
  std::vector<std::string> unexpected;
  for (const auto& n : ck.names())
    if (!used.count(n) && !(opt.ignore_unused && opt.ignore_unused(n))) unexpected.push_back(n);
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::string msg = cat(ck.path(), ": the weights do not fit the model:");
    if (!missing.empty())
      msg += cat(" missing ", missing.size(), " tensor(s): ", list(missing), ";");
    if (!mismatched.empty()) msg += cat(" mis-shaped: ", list(mismatched), ";");
    if (!unexpected.empty())
      msg += cat(" unexpected ", unexpected.size(), " tensor(s): ", list(unexpected), ";");
    msg.pop_back();
    throw Error(msg);
  }
}

void to_dtype_device(torch::nn::Module& module, torch::ScalarType dtype, torch::Device device) {
  torch::NoGradGuard ng;
  for (auto& p : module.parameters()) {
    torch::Tensor t = p;
    if (t.is_floating_point() && t.scalar_type() != dtype) t = t.to(dtype);
    if (t.device() != device) t = t.to(device);
    if (!t.is_same(p)) p.set_data(t);
  }
}

}  // namespace emovlm
