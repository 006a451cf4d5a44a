// Feature extraction into the cache, and loading it.
#include "emovlm/pipeline/feature_cache.h"

#include <cstdio>
#include <filesystem>
#include <set>

#include "emovlm/core/error.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/progress.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/labels.h"
#include "emovlm/data/loader.h"
#include "emovlm/image/resample.h"
#include "emovlm/models/qwen2vl_generate.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/text/chat.h"
#include "emovlm/train/sft.h"
#include "emovlm/train/teacher.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

uint64_t inputs_hash(const json& inputs) {
  const std::string d = inputs.dump();
  return fnv1a64(d.data(), d.size());
}

// One image made ready on a worker thread: decoded, capped, preprocessed for both models, and its
// prompt tokenized; the main thread only batches and runs the models.
struct Decoded {
  PreparedPrompt vlm;
  uint64_t seed = 0;  // generate mode: the image's sampling seed (prompt_seed)
  torch::Tensor vit;  // the teacher's input [3, size, size]
  std::string error;
};

std::string shard_name(size_t k) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05zu.safetensors", k);
  return buf;
}


}  // namespace

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

json extract_features(const ExtractOptions& o) {
  if (o.vlm_mode != "score" && o.vlm_mode != "generate")
    throw Error(cat("--vlm-mode must be score or generate, not '", o.vlm_mode, "'"));
  if (o.teacher_dtype != "f32" && o.teacher_dtype != "bf16")
    throw Error(cat("--teacher-dtype must be f32 or bf16, not '", o.teacher_dtype, "'"));
  if (o.vlm_batch < 1 || o.teacher_batch < 1 || o.shard_size < 1)
    throw Error(cat("--vlm-batch, --teacher-batch and --shard-size must be at least 1 (", o.vlm_batch, ", ",
                    o.teacher_batch, ", ", o.shard_size, ")"));
  Dataset d = load_dataset(o.data, o.dataset);
  const std::vector<Sample>& samples = d.split(o.split);
  const std::vector<std::string> teacher_classes = read_classes(o.teacher);
  if (teacher_classes != d.labels.labels)
    throw Error(cat(o.teacher, ": the teacher's classes differ from the dataset's (", d.labels.labels.size(), " labels)"));
  OutputLock lock(o.out, OutputLock::Kind::Directory);
  const std::string mpath = (fs::path(o.out) / "manifest.json").string();

  // Everything the cached values depend on; a resumed or reused cache must match it exactly.
  Qwen2VLImageConfig qcfg = Qwen2VLImageConfig::from_dir(o.vlm);
  const VitImageConfig vcfg = classifier_image_config(o.teacher);
  json entries = json::array();
  std::vector<std::string> missing;
  {
    Progress bar("hashing images", static_cast<int64_t>(samples.size()), "img");
    for (const auto& s : samples) {
      std::string hash;
      int64_t bytes = -1;
      try {
        MappedFile m(s.path);  // refuses FIFOs and devices without waiting on them
        bytes = static_cast<int64_t>(m.size());
        hash = hex64(fnv1a64(m.data(), m.size()));
      } catch (const Error& e) {
        missing.push_back(e.what());
      }
      entries.push_back({{"path", store_path(s.path, mpath)}, {"label", s.label}, {"bytes", bytes}, {"hash", hash}});
      bar.advance();
    }
  }
  check_readable(cat("the ", o.split, " split"), o.data, samples.size(), missing);
  json inputs = {{"vlm", checkpoint_identity(o.vlm)},
                 {"teacher", checkpoint_identity(o.teacher)},
                 {"adapter", o.adapter.empty() ? json(nullptr) : checkpoint_identity(o.adapter)},
                 {"labels", d.labels.labels},
                 {"split", o.split},
                 {"vlm_mode", o.vlm_mode},
                 {"dtype", o.dtype},
                 {"cap_long_side", o.cap_long_side},
                 {"qwen2vl_image", {{"min_pixels", qcfg.min_pixels}, {"max_pixels", qcfg.max_pixels},
                                    {"patch_size", qcfg.patch_size}, {"merge_size", qcfg.merge_size}}},
                 {"vit_image", {{"size", vcfg.image_size}, {"mean", vcfg.image_mean}, {"std", vcfg.image_std}}},
                 {"prompt", categorical_prompt(d.labels)}};
  if (o.vlm_batch != 1) inputs["vlm_batch"] = o.vlm_batch;  // values differ from batch 1 by rounding
  if (o.teacher_dtype != "f32") inputs["teacher_dtype"] = o.teacher_dtype;
  if (o.vlm_mode == "generate") {
    inputs["generation"] = {{"temperature", o.temperature}, {"max_new_tokens", o.max_new_tokens}, {"seed", o.seed},
                            {"seeding", "per image"}};
    if (o.cuda_graph) inputs["generation"]["cuda_graph"] = true;  // graphs sum in another order
  }

  json manifest = {{"format", "emovlm-feature-cache"}, {"version", kFeatureCacheVersion}, {"inputs", inputs},
                   {"entries", entries}, {"shard_size", o.shard_size}, {"shards", json::array()}, {"complete", false}};
  if (file_exists(mpath)) {
    json old = read_json_file(mpath);
    if (old.value("version", 0) != kFeatureCacheVersion)
      throw Error(cat(o.out, ": a cache of format version ", old.value("version", 0), " (this build writes ",
                      kFeatureCacheVersion, "); remove it or choose another --out"));
    const std::string d_in = json_first_difference(old.value("inputs", json()), inputs);
    if (!d_in.empty())
      throw Error(cat(o.out, ": this cache was made from other models, data or settings (inputs", d_in,
                      "); refusing to reuse it (remove the directory or choose another --out)"));
    // the same images (by content and label, in order) wherever they are now: their paths are updated
    json old_content = json::array(), content = json::array();
    for (const auto& e : old.value("entries", json::array())) old_content.push_back({e.value("label", -1), e.value("hash", "")});
    for (const auto& e : entries) content.push_back({e["label"], e["hash"]});
    const std::string d_img = json_first_difference(old_content, content);
    if (!d_img.empty() || old.value("shard_size", 0) != o.shard_size)
      throw Error(cat(o.out, ": the images of the split changed since this cache was made (",
                      d_img.empty() ? cat("shard size ", old.value("shard_size", 0), ", now ", o.shard_size)
                                    : cat("[label, content hash] at ", d_img),
                      "); refusing to reuse it"));
    manifest = old;
    if (manifest["entries"] != entries) {
      manifest["entries"] = entries;
      write_file_atomic(mpath, manifest.dump(1) + "\n");
    }
  }
  const size_t n_shards = (samples.size() + o.shard_size - 1) / o.shard_size;
  // the policy for unreadable images over the whole split (shards of an earlier run included)
  auto check_cached = [&] {
    std::vector<std::string> errors;
    for (const auto& sh : manifest["shards"])
      for (const auto& f : sh["failures"]) errors.push_back(f.value("error", f.value("path", "")));
    if (manifest["shards"].size() == n_shards) check_readable(cat("the ", o.split, " split"), o.data, samples.size(), errors);
  };
  if (manifest["shards"].size() >= n_shards) {
    check_cached();
    return manifest;
  }

  const torch::Device device = parse_device(o.device);
  const torch::ScalarType dtype = parse_dtype(o.dtype);
  Qwen2VL vlm = load_vlm(o.vlm, o.adapter, dtype, device);
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(o.vlm);
  std::shared_ptr<ImageClassifierImpl> teacher = load_image_classifier(o.teacher);
  teacher->eval();
  teacher->to(device);
  if (!manifest.contains("parameters")) {  // what evaluate reports, without opening the model folders
    int64_t n = 0;
    for (const auto& p : vlm->parameters()) n += p.numel();
    manifest["parameters"] = {{"vlm", n}, {"teacher", teacher->num_parameters()}, {"teacher_arch", teacher->arch()}};
  }
  const CategoricalQuery query = categorical_query(proc.tokenizer(), d.labels);
  GenerationConfig gen;
  if (o.vlm_mode == "generate") gen = reference_sampling(o.vlm, o.temperature, o.max_new_tokens, o.seed, o.cuda_graph);

  torch::NoGradGuard ng;
  Progress bar(cat("extract ", o.split), static_cast<int64_t>(samples.size()), "img");
  bar.advance(static_cast<int64_t>(manifest["shards"].size() * o.shard_size));
  for (size_t k = manifest["shards"].size(); k < n_shards; ++k) {
    const size_t begin = k * o.shard_size, end = std::min(samples.size(), begin + o.shard_size);
    OrderedPrefetcher<Decoded> decoded(
        end - begin,
        [&](size_t i) {
          Decoded r;
          try {
            RgbImage image = decode_image_file(samples[begin + i].path);
            r.vit = to_tensor(preprocess_vit(image, vcfg));
            VlmPrompt prompt{query.prompt, {cap_long_side(image, o.cap_long_side)}};
            r.seed = prompt_seed(o.seed, prompt.images);
            r.vlm = proc.prepare(prompt);
          } catch (const Error& e) {
            r.error = e.what();
          }
          return r;
        },
        o.workers, 8);
    std::vector<torch::Tensor> feats, scores, tlogits, teacher_px;
    std::vector<int64_t> answers, targets, index;
    json texts = json::array();  // generate mode: each cached image's answer
    json failures = json::array();
    auto flush_teacher = [&] {
      if (teacher_px.empty()) return;
      compat::AutocastGuard autocast(device.type(), torch::kBFloat16, o.teacher_dtype == "bf16");
      tlogits.push_back(teacher->logits(torch::stack(teacher_px).to(device)).to(torch::kCPU).to(torch::kFloat32));
      teacher_px.clear();
    };
    // The VLM runs on groups of vlm_batch images (1: each alone, bitwise independent of the rest).
    std::vector<PreparedPrompt> group;
    std::vector<size_t> group_index;
    std::vector<uint64_t> group_seed;
    auto flush_vlm = [&] {
      if (group.empty()) return;
      // one prefill per group serves the label scores and, in generate mode, each image's answer
      Prefill pf = prefill(*vlm, proc.collate(group, device));
      std::vector<Prefill> rows;
      if (o.vlm_mode == "generate")
        for (size_t g = 0; g < group.size(); ++g) rows.push_back(pf.row(static_cast<int64_t>(g)));
      torch::Tensor pooled;
      torch::Tensor s = label_scores(*vlm, std::move(pf), query.candidates, &pooled);
      for (size_t g = 0; g < group.size(); ++g) {
        const size_t i = group_index[g];
        int64_t answer = s[g].argmax().item<int64_t>();
        if (o.vlm_mode == "generate") {
          GenerationConfig gc = gen;
          gc.seed = group_seed[g];
          GenerationResult gr = generate(*vlm, std::move(rows[g]), gc);
          std::vector<int32_t> ids(gr.tokens[0].begin(), gr.tokens[0].end());
          const std::string text = proc.tokenizer().decode(ids, true);
          answer = parse_categorical_answer(text, d.labels).index;
          texts.push_back(text);
        }
        feats.push_back(pooled[static_cast<int64_t>(g)]);
        scores.push_back(s[static_cast<int64_t>(g)].to(torch::kFloat32));
        answers.push_back(answer);
        targets.push_back(samples[i].label);
        index.push_back(static_cast<int64_t>(i));
      }
      bar.advance(static_cast<int64_t>(group.size()));
      group.clear();
      group_index.clear();
      group_seed.clear();
    };
    Decoded dec;
    for (size_t i = begin; i < end; ++i) {
      decoded.next(dec);
      if (!dec.error.empty()) {
        failures.push_back({{"path", store_path(samples[i].path, mpath)}, {"error", dec.error}});
        bar.advance();
        continue;
      }
      group.push_back(std::move(dec.vlm));
      group_index.push_back(i);
      group_seed.push_back(dec.seed);
      teacher_px.push_back(dec.vit);
      if (static_cast<int64_t>(group.size()) >= o.vlm_batch) flush_vlm();
      if (static_cast<int64_t>(teacher_px.size()) >= o.teacher_batch) flush_teacher();
    }
    flush_vlm();
    flush_teacher();
    const std::string file = shard_name(k);
    NamedTensors ts;
    if (!feats.empty()) {
      ts = {{"features", torch::stack(feats)},
            {"vlm_scores", torch::stack(scores)},
            {"vlm_answer", torch::tensor(answers, torch::kInt64)},
            {"teacher_logits", torch::cat(tlogits)},
            {"labels", torch::tensor(targets, torch::kInt64)},
            {"index", torch::tensor(index, torch::kInt64)}};
    }
    // each shard names the split and inputs it belongs to: the reader checks them against the manifest
    save_tensors((fs::path(o.out) / file).string(), ts,
                 {{"format", "emovlm-feature-cache"}, {"split", o.split}, {"inputs", hex64(inputs_hash(inputs))}});
    json shard = {{"file", file}, {"first", begin}, {"count", end - begin}, {"cached", feats.size()}, {"failures", failures}};
    if (o.vlm_mode == "generate") shard["answers"] = std::move(texts);
    manifest["shards"].push_back(std::move(shard));
    manifest["complete"] = manifest["shards"].size() == n_shards;
    write_file_atomic(mpath, manifest.dump(1) + "\n");
  }
  check_cached();
  return manifest;
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
      const std::string want = hex64(inputs_hash(c.manifest["inputs"]));
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
