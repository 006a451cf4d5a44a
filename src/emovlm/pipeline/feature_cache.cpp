// Feature extraction into the cache, and loading it.
#include "emovlm/pipeline/feature_cache.h"

#include <cstdio>
#include <filesystem>
#include <set>

#include "emovlm/core/error.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/progress.h"
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

json checkpoint_identity(const std::string& dir) {
  json id = {{"path", fs::absolute(dir).string()}};
  const std::string cfg = (fs::path(dir) / "config.json").string();
  if (file_exists(cfg)) id["config"] = hex64(hash_file(cfg));
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    MappedFile m(f);
    uint64_t h = fnv1a64(m.data(), std::min<size_t>(m.size(), 1 << 20));
    for (size_t off = 256u << 20; off < m.size(); off += 256u << 20)
      h = fnv1a64(m.data() + off, std::min<size_t>(m.size() - off, 1 << 16), h);
    h = fnv1a64(m.data() + (m.size() > (1 << 16) ? m.size() - (1 << 16) : 0), std::min<size_t>(m.size(), 1 << 16), h);
    id["files"].push_back({{"name", fs::path(f).filename().string()}, {"bytes", m.size()}, {"hash", hex64(h)}});
  }
  return id;
}

namespace {

// One image made ready on a worker thread: decoded, capped, preprocessed for both models, and its
// prompt tokenized; the main thread only batches and runs the models.
struct Decoded {
  PreparedPrompt vlm;
  torch::Tensor vit;  // the teacher's input [3, size, size]
  std::string error;
};

std::string shard_name(size_t k) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "shard-%05zu.safetensors", k);
  return buf;
}


}  // namespace

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
  make_dirs(o.out);

  // Everything the cached values depend on; a resumed or reused cache must match it exactly.
  Qwen2VLImageConfig qcfg = Qwen2VLImageConfig::from_dir(o.vlm);
  const VitImageConfig vcfg = classifier_image_config(o.teacher);
  json entries = json::array();
  {
    Progress bar("hashing images", static_cast<int64_t>(samples.size()), "img");
    for (const auto& s : samples) {
      std::error_code ec;
      auto bytes = fs::file_size(s.path, ec);
      entries.push_back({{"path", s.path}, {"label", s.label}, {"bytes", ec ? -1 : static_cast<int64_t>(bytes)},
                         {"hash", ec ? "" : hex64(hash_file(s.path))}});
      bar.advance();
    }
  }
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
  if (o.teacher_dtype != "f32") inputs["teacher_dtype"] = o.teacher_dtype;  // absent for f32: older caches match
  if (o.vlm_mode == "generate") {
    inputs["generation"] = {{"temperature", o.temperature}, {"max_new_tokens", o.max_new_tokens}, {"seed", o.seed}};
    // graphs sum in another order: its own setting (absent when off, so older caches still match)
    if (o.cuda_graph) inputs["generation"]["cuda_graph"] = true;
  }

  const std::string mpath = (fs::path(o.out) / "manifest.json").string();
  json manifest = {{"format", "emovlm-feature-cache"}, {"version", 1}, {"inputs", inputs}, {"entries", entries},
                   {"shard_size", o.shard_size}, {"shards", json::array()}, {"complete", false}};
  if (file_exists(mpath)) {
    json old = read_json_file(mpath);
    if (old.value("inputs", json()) != inputs)
      throw Error(cat(o.out, ": this cache was made from other models, data or settings; refusing to reuse it (remove the "
                      "directory or choose another --out)"));
    if (old.value("entries", json()) != entries || old.value("shard_size", 0) != o.shard_size)
      throw Error(cat(o.out, ": the images of the split changed since this cache was made (paths or contents); refusing to "
                      "reuse it"));
    manifest = old;
  }
  const size_t n_shards = (samples.size() + o.shard_size - 1) / o.shard_size;
  if (manifest["shards"].size() >= n_shards) return manifest;

  const torch::Device device = parse_device(o.device);
  const torch::ScalarType dtype = parse_dtype(o.dtype);
  Qwen2VL vlm = load_vlm(o.vlm, o.adapter, dtype, device);
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(o.vlm);
  std::shared_ptr<ImageClassifierImpl> teacher = load_image_classifier(o.teacher);
  teacher->eval();
  teacher->to(device);
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
            r.vlm = proc.prepare(VlmPrompt{query.prompt, {cap_long_side(image, o.cap_long_side)}});
          } catch (const Error& e) {
            r.error = e.what();
          }
          return r;
        },
        o.workers, 8);
    std::vector<torch::Tensor> feats, scores, tlogits, teacher_px;
    std::vector<int64_t> answers, targets, index;
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
          gc.seed = mix_seed(o.seed, i);
          GenerationResult gr = generate(*vlm, std::move(rows[g]), gc);
          std::vector<int32_t> ids(gr.tokens[0].begin(), gr.tokens[0].end());
          answer = parse_categorical_answer(proc.tokenizer().decode(ids, true), d.labels).index;
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
    };
    Decoded dec;
    for (size_t i = begin; i < end; ++i) {
      decoded.next(dec);
      if (!dec.error.empty()) {
        failures.push_back({{"path", samples[i].path}, {"error", dec.error}});
        bar.advance();
        continue;
      }
      group.push_back(std::move(dec.vlm));
      group_index.push_back(i);
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
    save_tensors((fs::path(o.out) / file).string(), ts, {{"format", "emovlm-feature-cache"}});
    manifest["shards"].push_back({{"file", file}, {"first", begin}, {"count", end - begin}, {"cached", feats.size()},
                                  {"failures", failures}});
    manifest["complete"] = manifest["shards"].size() == n_shards;
    write_file_atomic(mpath, manifest.dump(1) + "\n");
  }
  return manifest;
}

FeatureCache FeatureCache::load(const std::string& dir) {
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  if (!file_exists(mpath)) throw Error(cat(dir, ": not a feature cache (no manifest.json)"));
  FeatureCache c;
  c.dir = dir;
  c.manifest = read_json_file(mpath);
  if (c.manifest.value("format", "") != "emovlm-feature-cache") throw Error(cat(mpath, ": not a feature cache manifest"));
  if (!c.manifest.value("complete", false))
    throw Error(cat(dir, ": the extraction did not finish; run `emovlm extract` again with the same arguments to resume"));
  c.labels = c.manifest["inputs"]["labels"].get<std::vector<std::string>>();
  std::vector<torch::Tensor> f, t, s, a, y;
  for (const auto& sh : c.manifest["shards"]) {
    if (sh["cached"].get<int64_t>() == 0) continue;
    auto ts = load_tensors((fs::path(dir) / sh["file"].get<std::string>()).string());
    for (const char* key : {"features", "teacher_logits", "vlm_scores", "vlm_answer", "labels", "index"})
      if (!ts.count(key)) throw Error(cat(dir, "/", sh["file"].get<std::string>(), ": missing tensor '", key, "'"));
    f.push_back(ts["features"].to(torch::kFloat32));
    t.push_back(ts["teacher_logits"].to(torch::kFloat32));
    s.push_back(ts["vlm_scores"].to(torch::kFloat32));
    a.push_back(ts["vlm_answer"].clone());
    y.push_back(ts["labels"].clone());
    auto idx = ts["index"];
    for (int64_t i = 0; i < idx.size(0); ++i)
      c.paths.push_back(c.manifest["entries"][idx[i].item<int64_t>()]["path"].get<std::string>());
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
  auto entries = [](const std::string& d) {
    const std::string m = (fs::path(d) / "manifest.json").string();
    if (!file_exists(m)) throw Error(cat(d, ": not a feature cache (no manifest.json)"));
    return read_json_file(m)["entries"];
  };
  std::set<std::string> other;
  for (const auto& e : entries(other_dir))
    if (!e.value("hash", "").empty()) other.insert(e["hash"].get<std::string>());
  std::vector<std::string> out;
  for (const auto& e : entries(dir))
    if (!e.value("hash", "").empty() && other.count(e["hash"].get<std::string>())) out.push_back(e["path"].get<std::string>());
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
