// Feature extraction into the cache.
#include "emovlm/pipeline/extract.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/progress.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/data/labels.h"
#include "emovlm/data/loader.h"
#include "emovlm/dist/process_group.h"
#include "emovlm/image/resample.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/models/qwen2vl_generation.h"
#include "emovlm/models/qwen2vl_label_scores.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/models/weights.h"
#include "emovlm/pipeline/emotion_query.h"
#include "emovlm/text/chat.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

// One image made ready on a worker thread: decoded, capped, preprocessed for both models, and its
// prompt tokenized; the main thread only batches and runs the models.
struct Decoded {
  PreparedPrompt vlm;
  uint64_t seed = 0;  // generate mode: the image's sampling seed (prompt_seed)
  torch::Tensor vit;  // the teacher's input [3, size, size]
  std::string error;
};

// Everything the cached values depend on; a resumed or reused cache must match it exactly.
json cache_inputs(const ExtractOptions& o, const Dataset& d, const Qwen2VLImageConfig& qcfg,
                  const VitImageConfig& vcfg) {
  json inputs = {{"vlm", checkpoint_identity(o.vlm)},
                 {"teacher", checkpoint_identity(o.teacher)},
                 {"adapter", o.adapter.empty() ? json(nullptr) : checkpoint_identity(o.adapter)},
                 {"labels", d.labels.labels},
                 {"split", o.split},
                 {"vlm_mode", o.vlm_mode},
                 {"dtype", dtype_name(o.dtype)},
                 {"cap_long_side", o.cap_long_side},
                 {"qwen2vl_image",
                  {{"min_pixels", qcfg.min_pixels},
                   {"max_pixels", qcfg.max_pixels},
                   {"patch_size", qcfg.patch_size},
                   {"merge_size", qcfg.merge_size}}},
                 {"vit_image",
                  {{"size", vcfg.image_size}, {"mean", vcfg.image_mean}, {"std", vcfg.image_std}}},
                 {"prompt", categorical_prompt(d.labels)}};
  if (o.vlm_batch != 1)
    inputs["vlm_batch"] = o.vlm_batch;  // values differ from batch 1 by rounding
  if (o.teacher_dtype != ComputeDtype::f32) inputs["teacher_dtype"] = dtype_name(o.teacher_dtype);
  if (o.vlm_mode == "generate") {
    inputs["generation"] = {{"temperature", o.temperature},
                            {"max_new_tokens", o.max_new_tokens},
                            {"seed", o.seed},
                            {"seeding", "per image"}};
    if (o.cuda_graph) inputs["generation"]["cuda_graph"] = true;  // graphs sum in another order
  }
  return inputs;
}

// The manifest to continue from: a new one over the split's images (hashed now), or the one in
// OUT when it was made from the same inputs and images (their paths updated); otherwise an Error.
json open_manifest(const ExtractOptions& o, const std::vector<Sample>& samples,
                   const std::string& mpath, const json& inputs) {
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
      entries.push_back({{"path", store_path(s.path, mpath)},
                         {"label", s.label},
                         {"bytes", bytes},
                         {"hash", hash}});
      bar.advance();
    }
  }
  check_readable(cat("the ", o.split, " split"), o.data, samples.size(), missing);
  json manifest = {{"format", "emovlm-feature-cache"},
                   {"version", kFeatureCacheVersion},
                   {"inputs", inputs},
                   {"entries", entries},
                   {"shard_size", o.shard_size},
                   {"shards", json::array()},
                   {"complete", false}};
  if (!file_exists(mpath)) return manifest;
  const CacheManifest old = CacheManifest::parse(read_json_file(mpath), mpath);
  if (old.version != kFeatureCacheVersion)
    throw Error(cat(o.out, ": a cache of format version ", old.version, " (this build writes ",
                    kFeatureCacheVersion, "); remove it or choose another --out"));
  const std::string d_in = json_first_difference(old.inputs, inputs);
  if (!d_in.empty())
    throw Error(cat(o.out, ": this cache was made from other models, data or settings (inputs",
                    d_in,
                    "); refusing to reuse it (remove the directory or choose another --out)"));
  // the same images (by content and label, in order) wherever they are now: their paths are updated
  json old_content = json::array(), content = json::array();
  for (const auto& e : old.entries) old_content.push_back({e.label, e.hash});
  for (const auto& e : entries) content.push_back({e["label"], e["hash"]});
  const std::string d_img = json_first_difference(old_content, content);
  const int64_t old_shard_size = json_optional<int64_t>(old.raw, "shard_size", 0, mpath);
  if (!d_img.empty() || old_shard_size != o.shard_size)
    throw Error(cat(o.out, ": the images of the split changed since this cache was made (",
                    d_img.empty() ? cat("shard size ", old_shard_size, ", now ", o.shard_size)
                                  : cat("[label, content hash] at ", d_img),
                    "); refusing to reuse it"));
  json resumed = old.raw;
  if (resumed["entries"] != entries) {
    resumed["entries"] = entries;
    write_file_atomic(mpath, resumed.dump(1) + "\n");
  }
  return resumed;
}

// The frozen models of an extraction and what they are asked, computing one shard at a time.
// The VLM runs on groups of vlm_batch images (1: each alone, bitwise independent of the rest), the
// teacher on groups of teacher_batch; images are decoded and prepared on worker threads ahead.
class ShardComputer {
 public:
  ShardComputer(const ExtractOptions& o, const Dataset& d, const VitImageConfig& vcfg,
                const std::string& manifest_path, const json& inputs)
      : o_(o),
        d_(d),
        samples_(d.split(o.split)),
        vcfg_(vcfg),
        manifest_path_(manifest_path),
        inputs_(inputs),
        device_(to_torch(o.device)),
        vlm_(Qwen2VLImpl::from_pretrained(o.vlm, o.adapter, to_torch(o.dtype), device_)),
        proc_(Qwen2VLProcessor::from_dir(o.vlm)),
        teacher_(load_image_classifier(o.teacher)),
        query_(categorical_query(proc_.tokenizer(), d.labels)) {
    teacher_->eval();
    teacher_->to(device_);
    if (o.vlm_mode == "generate")
      gen_ = reference_sampling(o.vlm, o.temperature, o.max_new_tokens, o.seed, o.cuda_graph);
  }

  // The models' sizes, as the manifest records them.
  json parameters() const {
    return {{"vlm", count_parameters(*vlm_)},
            {"teacher", count_parameters(*teacher_)},
            {"teacher_arch", teacher_->arch()}};
  }

  // Called with the number of images done (cached or failed) as they are done.
  std::function<void(int64_t)> on_images;

  // Shard k's manifest entry (one JSON line) followed by the bytes of its file.
  std::string compute(size_t k) {
    torch::NoGradGuard ng;
    const size_t begin = k * o_.shard_size, end = std::min(samples_.size(), begin + o_.shard_size);
    OrderedPrefetcher<Decoded> decoded(
        end - begin, [&](size_t i) { return decode(samples_[begin + i]); }, o_.workers, 8);
    Shard s;
    Decoded dec;
    for (size_t i = begin; i < end; ++i) {
      decoded.next(dec);
      if (!dec.error.empty()) {
        s.failures.push_back(
            {{"path", store_path(samples_[i].path, manifest_path_)}, {"error", dec.error}});
        if (on_images) on_images(1);
        continue;
      }
      s.group.push_back(std::move(dec.vlm));
      s.group_index.push_back(i);
      s.group_seed.push_back(dec.seed);
      s.teacher_px.push_back(dec.vit);
      if (static_cast<int64_t>(s.group.size()) >= o_.vlm_batch) run_vlm(s);
      if (static_cast<int64_t>(s.teacher_px.size()) >= o_.teacher_batch) run_teacher(s);
    }
    run_vlm(s);
    run_teacher(s);
    NamedTensors ts;
    if (!s.feats.empty()) {
      ts = {{"features", torch::stack(s.feats)},
            {"vlm_scores", torch::stack(s.scores)},
            {"vlm_answer", torch::tensor(s.answers, torch::kInt64)},
            {"teacher_logits", torch::cat(s.tlogits)},
            {"labels", torch::tensor(s.targets, torch::kInt64)},
            {"index", torch::tensor(s.index, torch::kInt64)}};
    }
    json shard = {{"file", feature_cache_shard_name(k)},
                  {"first", begin},
                  {"count", end - begin},
                  {"cached", s.feats.size()},
                  {"failures", s.failures}};
    if (o_.vlm_mode == "generate") shard["answers"] = std::move(s.texts);
    // each shard names the split and inputs it belongs to: the reader checks them against the
    // manifest
    return shard.dump() + "\n" +
           tensors_to_safetensors(ts, {{"format", "emovlm-feature-cache"},
                                       {"split", o_.split},
                                       {"inputs", hex64(feature_cache_inputs_hash(inputs_))}});
  }

 private:
  // What a shard collects: the images waiting for each model, and the results in image order.
  struct Shard {
    std::vector<PreparedPrompt> group;  // waiting for the VLM
    std::vector<size_t> group_index;
    std::vector<uint64_t> group_seed;
    std::vector<torch::Tensor> teacher_px;  // waiting for the teacher
    std::vector<torch::Tensor> feats, scores, tlogits;
    std::vector<int64_t> answers, targets, index;
    json texts = json::array();  // generate mode: each cached image's answer
    json failures = json::array();
  };

  // Worker threads: one image decoded, its teacher input, prompt and sampling seed.
  Decoded decode(const Sample& sample) const {
    Decoded r;
    try {
      RgbImage image = decode_image_file(sample.path);
      r.vit = to_tensor(preprocess_vit(image, vcfg_));
      VlmPrompt prompt{query_.prompt, {cap_long_side(image, o_.cap_long_side)}};
      r.seed = prompt_seed(o_.seed, prompt.images);
      r.vlm = proc_.prepare(prompt);
    } catch (const Error& e) {
      r.error = e.what();
    }
    return r;
  }

  void run_teacher(Shard& s) {
    if (s.teacher_px.empty()) return;
    compat::AutocastGuard autocast(device_.type(), torch::kBFloat16,
                                   o_.teacher_dtype == ComputeDtype::bf16);
    // [n, 3, size, size] -> [n, classes]
    s.tlogits.push_back(teacher_->logits(torch::stack(s.teacher_px).to(device_))
                            .to(torch::kCPU)
                            .to(torch::kFloat32));
    s.teacher_px.clear();
  }

  void run_vlm(Shard& s) {
    if (s.group.empty()) return;
    // one prefill per group serves the label scores and, in generate mode, each image's answer
    Prefill pf = prefill(*vlm_, proc_.collate(s.group, device_));
    std::vector<Prefill> rows;
    if (o_.vlm_mode == "generate")
      for (size_t g = 0; g < s.group.size(); ++g) rows.push_back(pf.row(static_cast<int64_t>(g)));
    torch::Tensor pooled;  // [n, hidden]
    const torch::Tensor scores =
        label_scores(*vlm_, std::move(pf), query_.candidates, &pooled);  // [n, labels]
    for (size_t g = 0; g < s.group.size(); ++g) {
      const size_t i = s.group_index[g];
      int64_t answer = scores[static_cast<int64_t>(g)].argmax().item<int64_t>();
      if (o_.vlm_mode == "generate") {
        GenerationConfig gc = gen_;
        gc.seed = s.group_seed[g];
        GenerationResult gr = generate(*vlm_, std::move(rows[g]), gc);
        std::vector<int32_t> ids(gr.tokens[0].begin(), gr.tokens[0].end());
        const std::string text = proc_.tokenizer().decode(ids, true);
        answer = parse_categorical_answer(text, d_.labels).index;
        s.texts.push_back(text);
      }
      s.feats.push_back(pooled[static_cast<int64_t>(g)]);
      s.scores.push_back(scores[static_cast<int64_t>(g)].to(torch::kFloat32));
      s.answers.push_back(answer);
      s.targets.push_back(samples_[i].label);
      s.index.push_back(static_cast<int64_t>(i));
    }
    if (on_images) on_images(static_cast<int64_t>(s.group.size()));
    s.group.clear();
    s.group_index.clear();
    s.group_seed.clear();
  }

  const ExtractOptions& o_;
  const Dataset& d_;
  const std::vector<Sample>& samples_;
  const VitImageConfig& vcfg_;
  const std::string manifest_path_;
  const json& inputs_;
  const torch::Device device_;
  Qwen2VL vlm_;
  Qwen2VLProcessor proc_;
  std::shared_ptr<ImageClassifierImpl> teacher_;
  const CategoricalQuery query_;
  GenerationConfig gen_;
};

}  // namespace

json extract_features(const ExtractOptions& o) {
  if (o.vlm_mode != "score" && o.vlm_mode != "generate")
    throw Error(cat("--vlm-mode must be score or generate, not '", o.vlm_mode, "'"));
  if (o.teacher_dtype == ComputeDtype::f16)
    throw Error("--teacher-dtype must be f32 or bf16, not f16");
  if (o.vlm_batch < 1 || o.teacher_batch < 1 || o.shard_size < 1)
    throw Error(cat("--vlm-batch, --teacher-batch and --shard-size must be at least 1 (",
                    o.vlm_batch, ", ", o.teacher_batch, ", ", o.shard_size, ")"));
  Dataset d = load_dataset(o.data, o.dataset);
  const std::vector<Sample>& samples = d.split(o.split);
  const std::vector<std::string> teacher_classes = read_classes(o.teacher);
  if (teacher_classes != d.labels.labels)
    throw Error(cat(o.teacher, ": the teacher's classes differ from the dataset's (",
                    d.labels.labels.size(), " labels)"));
  const std::string mpath = (fs::path(o.out) / "manifest.json").string();
  Qwen2VLImageConfig qcfg = Qwen2VLImageConfig::from_dir(o.vlm);
  const VitImageConfig vcfg = classifier_image_config(o.teacher);
  const json inputs = cache_inputs(o, d, qcfg, vcfg);

  // Data parallel (torchrun, Slurm): rank 0 owns the cache folder (lock, manifest, shard files);
  // the ranks compute shards k, k+1, ... in turn and send them to rank 0, which writes them in
  // order, so the cache is the one a single process writes, byte for byte.
  std::unique_ptr<OutputLock> lock;
  const size_t n_shards = (samples.size() + o.shard_size - 1) / o.shard_size;
  // the policy for unreadable images over the whole split (shards of an earlier run included)
  auto check_cached = [&](const json& manifest) {
    std::vector<std::string> errors;
    for (const auto& sh : manifest["shards"])
      for (const auto& f : sh["failures"]) errors.push_back(f.value("error", f.value("path", "")));
    if (manifest["shards"].size() == n_shards)
      check_readable(cat("the ", o.split, " split"), o.data, samples.size(), errors);
  };
  json manifest = json::parse(dist::from_main([&] {
    lock = std::make_unique<OutputLock>(o.out, OutputLock::Kind::Directory);
    json m = open_manifest(o, samples, mpath, inputs);
    if (m["shards"].size() >= n_shards) check_cached(m);
    return m.dump();
  }));
  if (manifest["shards"].size() >= n_shards) return manifest;

  ShardComputer computer(o, d, vcfg, mpath, inputs);
  if (!manifest.contains("parameters"))  // what evaluate reports, without opening the models
    manifest["parameters"] = computer.parameters();

  Progress bar(cat("extract ", o.split), static_cast<int64_t>(samples.size()), "img");
  bar.advance(static_cast<int64_t>(manifest["shards"].size() * o.shard_size));
  const bool per_image_progress = !dist::active();  // else rank 0 counts the shards it receives
  if (per_image_progress) computer.on_images = [&](int64_t n) { bar.advance(n); };
  for (size_t next = manifest["shards"].size(); next < n_shards;
       next += static_cast<size_t>(dist::world_size())) {
    const size_t k = next + static_cast<size_t>(dist::rank());
    const std::vector<std::string> computed =
        dist::all_gather_bytes(k < n_shards ? computer.compute(k) : std::string());
    if (!dist::is_main()) continue;
    for (size_t r = 0; r < computed.size() && next + r < n_shards; ++r) {
      const size_t nl = computed[r].find('\n');
      json shard = json::parse(computed[r].substr(0, nl));
      write_file_atomic((fs::path(o.out) / shard["file"].get<std::string>()).string(),
                        computed[r].substr(nl + 1));
      if (!per_image_progress) bar.advance(shard["count"].get<int64_t>());
      manifest["shards"].push_back(std::move(shard));
      manifest["complete"] = manifest["shards"].size() == n_shards;
      write_file_atomic(mpath, manifest.dump(1) + "\n");
    }
  }
  computer.on_images = nullptr;  // it counts on `bar`, which goes before `computer`
  dist::from_main([&] {
    check_cached(manifest);
    return std::string();
  });
  return manifest;
}

}  // namespace emovlm
