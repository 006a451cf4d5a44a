// The feature cache's reader and the identity of the VLM a pipeline part was made from.
#include "emovlm/data/feature_cache.h"

#include <cstdio>
#include <filesystem>
#include <set>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/data/labels.h"

namespace emovlm {

namespace fs = std::filesystem;

uint64_t feature_cache_inputs_hash(const json& inputs) {
  const std::string d = inputs.dump();
  return fnv1a64(d.data(), d.size());
}

std::string feature_cache_shard_name(size_t k) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05zu.safetensors", k);
  return buf;
}

json vlm_identity(const std::string& vlm, const std::string& adapter) {
  return {{"vlm", checkpoint_identity(vlm)}, {"adapter", adapter.empty() ? json(nullptr) : checkpoint_identity(adapter)}};
}

json vlm_identity_of_cache(const json& manifest) {
  const json& in = manifest.at("inputs");
  return {{"vlm", in.at("vlm")}, {"adapter", in.value("adapter", json(nullptr))}};
}

void check_same_vlm(const json& a, const std::string& a_what, const json& b, const std::string& b_what) {
  const std::string d = json_first_difference(a, b);
  if (!d.empty())
    throw Error(cat(b_what, " was made from another VLM (or adapter) than ", a_what, ": ", d,
                    "; the parts of one pipeline must come from the same VLM"));
}


namespace {

// A shard holds one row per cached image in every tensor: features [N, D], teacher_logits and
// vlm_scores [N, C], vlm_answer [N] in -1..C-1 (-1: no parseable answer), labels [N] in 0..C-1,
// index [N] (checked against the manifest by the caller). Anything else is refused here, naming
// the shard, before it reaches a loss or an indexing op.
void check_shard(const std::string& shard, const std::map<std::string, torch::Tensor>& ts, int64_t classes) {
  for (const char* key : {"features", "teacher_logits", "vlm_scores", "vlm_answer", "labels", "index"})
    if (!ts.count(key)) throw Error(cat(shard, ": missing tensor '", key, "'"));
  const int64_t n = ts.at("index").dim() == 1 ? ts.at("index").size(0) : -1;
  auto expect = [&](const char* key, int64_t width, bool integral) {
    const torch::Tensor& x = ts.at(key);
    const bool ok = width < 0 ? x.dim() == 1 && x.size(0) == n
                              : x.dim() == 2 && x.size(0) == n && (width == 0 || x.size(1) == width);
    if (!ok || n < 0)
      throw Error(cat(shard, ": tensor '", key, "' has shape ", shape_str(x.sizes().vec()), "; expected ",
                      width < 0 ? cat("[", n, "]") : width == 0 ? cat("[", n, ", D]") : cat("[", n, ", ", width, "]"),
                      " (one row per cached image, ", classes, " classes)"));
    if (integral != !x.is_floating_point())
      throw Error(cat(shard, ": tensor '", key, "' has dtype ", x.scalar_type(), "; expected ",
                      integral ? "an integer type" : "a floating-point type"));
  };
  expect("index", -1, true);
  expect("features", 0, false);
  expect("teacher_logits", classes, false);
  expect("vlm_scores", classes, false);
  expect("vlm_answer", -1, true);
  expect("labels", -1, true);
  auto in_range = [&](const char* key, int64_t lo) {
    const torch::Tensor& x = ts.at(key);
    if (n == 0) return;
    const int64_t mn = x.min().item<int64_t>(), mx = x.max().item<int64_t>();
    if (mn < lo || mx >= classes)
      throw Error(cat(shard, ": tensor '", key, "' holds ", mn < lo ? mn : mx, ", outside ", lo, "..", classes - 1,
                      " (the manifest's ", classes, " labels)"));
  };
  in_range("labels", 0);
  in_range("vlm_answer", -1);
}

FeatureCache read_cache(const std::string& dir, const std::string& mpath);

}  // namespace

FeatureCache FeatureCache::load(const std::string& dir) {
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  try {
    return read_cache(dir, mpath);
  } catch (const json::exception& e) {  // a field of the wrong type or missing in the manifest
    throw Error(cat(mpath, ": not a valid feature cache manifest (", e.what(), ")"));
  }
}

namespace {

// FeatureCache::load without the boundary that names the manifest in JSON errors.
FeatureCache read_cache(const std::string& dir, const std::string& mpath) {
  if (!file_exists(mpath)) throw Error(cat(dir, ": not a feature cache (no manifest.json)"));
  FeatureCache c;
  c.dir = dir;
  c.manifest = read_json_file(mpath);
  if (c.manifest.value("format", "") != "emovlm-feature-cache") throw Error(cat(mpath, ": not a feature cache manifest"));
  const int version = c.manifest.value("version", 0);
  if (version < 1 || version > kFeatureCacheVersion)
    throw Error(cat(mpath, ": a feature cache of format version ", version, "; this build reads 1 to ", kFeatureCacheVersion));
  if (!c.manifest.value("complete", false))
    throw Error(cat(dir, ": the extraction did not finish; run `emovlm extract` again with the same arguments to resume"));
  c.labels = c.manifest["inputs"]["labels"].get<std::vector<std::string>>();
  std::vector<torch::Tensor> f, t, s, a, y;
  for (const auto& sh : c.manifest["shards"]) {
    if (sh["cached"].get<int64_t>() == 0) continue;
    const std::string shard = (fs::path(dir) / sh["file"].get<std::string>()).string();
    if (version >= 2) {  // a shard of another split or extraction (two writers, a copy gone wrong) is refused
      const auto meta = Checkpoint(shard).metadata();
      const std::string want = hex64(feature_cache_inputs_hash(c.manifest["inputs"]));
      const std::string split = c.manifest["inputs"].value("split", "");
      auto field = [&](const char* k) { auto it = meta.find(k); return it == meta.end() ? std::string("(none)") : it->second; };
      if (field("inputs") != want || field("split") != split)
        throw Error(cat(shard, ": this shard belongs to another extraction (split ", field("split"), ", inputs ",
                        field("inputs"), ") than the manifest's (split ", split, ", inputs ", want, ")"));
    }
    auto ts = load_tensors(shard);
    check_shard(shard, ts, static_cast<int64_t>(c.labels.size()));
    f.push_back(ts["features"].to(torch::kFloat32));
    t.push_back(ts["teacher_logits"].to(torch::kFloat32));
    s.push_back(ts["vlm_scores"].to(torch::kFloat32));
    a.push_back(ts["vlm_answer"].clone());
    if (sh.contains("answers")) {
      if (!sh["answers"].is_array() || static_cast<int64_t>(sh["answers"].size()) != ts["index"].size(0))
        throw Error(cat(mpath, ": shard ", sh["file"].get<std::string>(), " lists ", sh["answers"].size(),
                        " answers for ", ts["index"].size(0), " cached images"));
      for (const auto& text : sh["answers"]) c.vlm_text.push_back(text.get<std::string>());
    }
    y.push_back(ts["labels"].clone());
    auto idx = ts["index"];
    const json& entries = c.manifest["entries"];
    for (int64_t i = 0; i < idx.size(0); ++i) {
      const int64_t k = idx[i].item<int64_t>();
      if (k < 0 || k >= static_cast<int64_t>(entries.size()))
        throw Error(cat(shard, ": index ", k, " outside the manifest's ", entries.size(), " entries"));
      const std::string stored = entries[k]["path"].get<std::string>();
      c.paths.push_back(version >= 2 ? resolve_stored_path(stored, mpath) : stored);
    }
  }
  if (f.empty()) throw Error(cat(dir, ": the cache holds no images"));
  c.features = torch::cat(f);
  c.teacher_logits = torch::cat(t);
  c.vlm_scores = torch::cat(s);
  c.vlm_answer = torch::cat(a);
  c.targets = torch::cat(y);
  return c;
}

}  // namespace

torch::Tensor FeatureCache::vlm_input(const std::string& kind) const {
  if (kind == "scores") return torch::softmax(vlm_scores, -1);
  if (kind != "onehot") throw Error(cat("VLM input must be onehot or scores, not '", kind, "'"));
  torch::Tensor out = torch::zeros({size(), num_classes()});
  for (int64_t i = 0; i < size(); ++i) {
    int64_t a = vlm_answer[i].item<int64_t>();
    if (a >= 0) out[i][a] = 1.0f;
  }
  return out;
}

std::vector<std::string> images_also_in(const std::string& dir, const std::string& other_dir) {
  auto manifest = [](const std::string& d) {
    const std::string m = (fs::path(d) / "manifest.json").string();
    if (!file_exists(m)) throw Error(cat(d, ": not a feature cache (no manifest.json)"));
    return read_json_file(m);
  };
  std::set<std::string> other;
  const json other_manifest = manifest(other_dir);  // (held: a range over a temporary's member would dangle)
  for (const auto& e : other_manifest["entries"])
    if (!e.value("hash", "").empty()) other.insert(e["hash"].get<std::string>());
  std::vector<std::string> out;
  const json m = manifest(dir);
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  for (const auto& e : m["entries"])
    if (!e.value("hash", "").empty() && other.count(e["hash"].get<std::string>())) {
      const std::string p = e["path"].get<std::string>();
      out.push_back(m.value("version", 1) >= 2 ? resolve_stored_path(p, mpath) : p);
    }
  return out;
}

int64_t warn_shared_images(const std::string& what, const std::string& dir, const std::string& train_dir, bool quiet) {
  const std::vector<std::string> shared = images_also_in(dir, train_dir);
  if (!shared.empty() && !quiet)
    std::fprintf(stderr,
                 "warning: %zu of the %s cache's images are also in the training cache %s (same content), e.g. %s; "
                 "its accuracy then measures memory (`emovlm data check` lists them)\n",
                 shared.size(), what.c_str(), train_dir.c_str(), shared.front().c_str());
  return static_cast<int64_t>(shared.size());
}

}  // namespace emovlm
