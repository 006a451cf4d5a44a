// The weight loader.
#include "emovlm/models/weights.h"

#include <nlohmann/json.hpp>

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

// Where the tensors come from: every name it holds, and for a name its shape (false when absent)
// and the tensor itself.
struct WeightSource {
  std::string path;
  std::vector<std::string> names;
  std::function<bool(const std::string&, std::vector<int64_t>*)> shape;
  std::function<torch::Tensor(const std::string&)> tensor;
};

void fill(torch::nn::Module& module, const WeightSource& src, const LoadOptions& opt) {
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
    std::vector<int64_t> shape;
    std::string found;
    for (const auto& c : cands) {
      if (src.shape(c, &shape)) {
        found = c;
        break;
      }
    }
    if (found.empty()) {
      if (!(opt.optional && opt.optional(name))) missing.push_back(name);
      continue;
    }
    used.insert(found);
    if (shape != param.sizes().vec()) {
      mismatched.push_back(
          cat(found, " ", shape_str(shape), " (expected ", shape_str(param.sizes().vec()), ")"));
      continue;
    }
    torch::Tensor t = src.tensor(found);
    if (opt.copy_into) {
      param.copy_(t);
      continue;
    }
    if (t.is_floating_point() && t.scalar_type() != opt.dtype) t = t.to(opt.dtype);
    if (t.device() != opt.device) t = t.to(opt.device);
    param.set_data(t);
  }
  std::vector<std::string> unexpected;
  for (const auto& n : src.names)
    if (!used.count(n) && !(opt.ignore_unused && opt.ignore_unused(n))) unexpected.push_back(n);
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::string msg = cat(src.path, ": the weights do not fit the model:");
    if (!missing.empty())
      msg += cat(" missing ", missing.size(), " tensor(s): ", list(missing), ";");
    if (!mismatched.empty()) msg += cat(" mis-shaped: ", list(mismatched), ";");
    if (!unexpected.empty())
      msg += cat(" unexpected ", unexpected.size(), " tensor(s): ", list(unexpected), ";");
    msg.pop_back();
    throw Error(msg);
  }
}
}  // namespace

void load_weights(torch::nn::Module& module, const Checkpoint& ck, const LoadOptions& opt) {
  WeightSource src;
  src.path = ck.path();
  src.names = ck.names();
  src.shape = [&ck](const std::string& name, std::vector<int64_t>* shape) {
    const TensorView* view = ck.find(name);
    if (view) *shape = view->shape;
    return view != nullptr;
  };
  src.tensor = [&ck](const std::string& name) {
    return tensor_from_view(*ck.find(name), ck.file_of(name));
  };
  fill(module, src, opt);
}

void load_weights(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                  const std::string& source, const LoadOptions& opt) {
  WeightSource src;
  src.path = source;
  for (const auto& kv : tensors) src.names.push_back(kv.first);
  src.shape = [&tensors](const std::string& name, std::vector<int64_t>* shape) {
    auto it = tensors.find(name);
    if (it != tensors.end()) *shape = it->second.sizes().vec();
    return it != tensors.end();
  };
  src.tensor = [&tensors](const std::string& name) { return tensors.at(name); };
  fill(module, src, opt);
}

void save_weights(const torch::nn::Module& module, const std::string& path,
                  const std::map<std::string, std::string>& metadata) {
  NamedTensors ts;
  for (const auto& p : module.named_parameters()) ts.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) ts.emplace_back(b.key(), b.value());
  save_tensors(path, ts, metadata);
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

nlohmann::json json_metadata(const std::string& path, const std::string& key) {
  const Checkpoint ck(path);
  const auto m = ck.metadata();
  const auto it = m.find(key);
  if (it == m.end()) throw Error(cat(path, ": no '", key, "' metadata; not written by emovlm"));
  try {
    nlohmann::json c = nlohmann::json::parse(it->second);
    if (!c.is_object()) throw Error("not a JSON object");
    return c;
  } catch (const std::exception& e) {
    throw Error(cat(path, ": metadata ", key, " is not valid: ", e.what()));
  }
}

}  // namespace emovlm
