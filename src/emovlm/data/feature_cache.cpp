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
  return {{"vlm", checkpoint_identity(vlm)},
          {"adapter", adapter.empty() ? json(nullptr) : checkpoint_identity(adapter)}};
}

json vlm_identity_of_cache(const json& manifest) {
  const json& in = manifest.at("inputs");
  return {{"vlm", in.at("vlm")}, {"adapter", in.value("adapter", json(nullptr))}};
}

void check_same_vlm(const json& a, const std::string& a_what, const json& b,
                    const std::string& b_what) {
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
void check_shard(const std::string& shard, const std::map<std::string, torch::Tensor>& ts,
                 int64_t classes) {
  for (const char* key :
       {"features", "teacher_logits", "vlm_scores", "vlm_answer", "labels", "index"})
    if (!ts.count(key)) throw Error(cat(shard, ": missing tensor '", key, "'"));
  const int64_t n = ts.at("index").dim() == 1 ? ts.at("index").size(0) : -1;
  auto expect = [&](const char* key, int64_t width, bool integral) {
    const torch::Tensor& x = ts.at(key);
    const bool ok = width < 0
                        ? x.dim() == 1 && x.size(0) == n
                        : x.dim() == 2 && x.size(0) == n && (width == 0 || x.size(1) == width);
    if (!ok || n < 0)
      throw Error(cat(shard, ": tensor '", key, "' has shape ", shape_str(x.sizes().vec()),
                      "; expected ",
                      width < 0    ? cat("[", n, "]")
                      : width == 0 ? cat("[", n, ", D]")
                                   : cat("[", n, ", ", width, "]"),
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
      throw Error(cat(shard, ": tensor '", key, "' holds ", mn < lo ? mn : mx, ", outside ", lo,
                      "..", classes - 1, " (the manifest's ", classes, " labels)"));
  };
  in_range("labels", 0);
  in_range("vlm_answer", -1);
}

}  // namespace

FeatureCache FeatureCache::load(const std::string& dir) {
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  const CacheManifest m = CacheManifest::read_dir(dir);
  if (!m.complete)
    throw Error(cat(dir,
                    ": the extraction did not finish; run `emovlm extract` again with the same "
                    "arguments to resume"));
  FeatureCache c;
  c.dir = dir;
  c.manifest = m.raw;
  c.labels = m.labels;
  const std::string want = hex64(feature_cache_inputs_hash(m.inputs));
  std::vector<torch::Tensor> f, t, s, a, y;
  for (const CacheManifest::Shard& sh : m.shards) {
    if (sh.cached == 0) continue;
    const std::string shard = (fs::path(dir) / sh.file).string();
    if (m.version >=
        2) {  // a shard of another split or extraction (two writers, a copy gone wrong) is refused
      const auto meta = Checkpoint(shard).metadata();
      auto field = [&](const char* k) {
        auto it = meta.find(k);
        return it == meta.end() ? std::string("(none)") : it->second;
      };
      if (field("inputs") != want || field("split") != m.split)
        throw Error(cat(shard, ": this shard belongs to another extraction (split ", field("split"),
                        ", inputs ", field("inputs"), ") than the manifest's (split ", m.split,
                        ", inputs ", want, ")"));
    }
    auto ts = load_tensors(shard);
    check_shard(shard, ts, static_cast<int64_t>(c.labels.size()));
    const torch::Tensor idx = ts["index"];
    if (idx.size(0) != sh.cached)
      throw Error(
          cat(shard, ": holds ", idx.size(0), " images where ", mpath, " says ", sh.cached));
    f.push_back(ts["features"].to(torch::kFloat32));
    t.push_back(ts["teacher_logits"].to(torch::kFloat32));
    s.push_back(ts["vlm_scores"].to(torch::kFloat32));
    a.push_back(ts["vlm_answer"].clone());
    if (sh.has_answers) {
      if (static_cast<int64_t>(sh.answers.size()) != idx.size(0))
        throw Error(cat(mpath, ": shard ", sh.file, " lists ", sh.answers.size(), " answers for ",
                        idx.size(0), " cached images"));
      c.vlm_text.insert(c.vlm_text.end(), sh.answers.begin(), sh.answers.end());
    }
    y.push_back(ts["labels"].clone());
    for (int64_t i = 0; i < idx.size(0); ++i) {
      const int64_t k = idx[i].item<int64_t>();
      if (k < 0 || k >= static_cast<int64_t>(m.entries.size()))
        throw Error(
            cat(shard, ": index ", k, " outside the manifest's ", m.entries.size(), " entries"));
      c.paths.push_back(m.entry_path(static_cast<size_t>(k), mpath));
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
  std::set<std::string> other;
  for (const auto& e : CacheManifest::read_dir(other_dir).entries)
    if (!e.hash.empty()) other.insert(e.hash);
  const CacheManifest m = CacheManifest::read_dir(dir);
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  std::vector<std::string> out;
  for (size_t k = 0; k < m.entries.size(); ++k)
    if (!m.entries[k].hash.empty() && other.count(m.entries[k].hash))
      out.push_back(m.entry_path(k, mpath));
  return out;
}

int64_t warn_shared_images(const std::string& what, const std::string& dir,
                           const std::string& train_dir, bool quiet) {
  const std::vector<std::string> shared = images_also_in(dir, train_dir);
  if (!shared.empty() && !quiet)
    std::fprintf(stderr,
                 "warning: %zu of the %s cache's images are also in the training cache %s (same "
                 "content), e.g. %s; "
                 "its accuracy then measures memory (`emovlm data check` lists them)\n",
                 shared.size(), what.c_str(), train_dir.c_str(), shared.front().c_str());
  return static_cast<int64_t>(shared.size());
}

}  // namespace emovlm
