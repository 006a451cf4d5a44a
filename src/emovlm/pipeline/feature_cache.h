// The feature cache: one pass over a dataset split computes what the frozen parts produce (the
// VLM's mean-pooled visual features after the merger, its label scores or parsed answer, the
// teacher's logits), stored as safetensors shards plus a manifest. Interrupted runs resume at the
// next shard; a cache whose inputs changed (models, adapter, images, settings) is refused.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/data/dataset.h"

namespace emovlm {

struct ExtractOptions {
  std::string vlm, adapter, teacher, data, split = "train", out;
  DatasetOptions dataset;
  std::string vlm_mode = "score";  // score: label scores (deterministic) | generate: sample + parse
  std::string dtype = "bf16", device = "auto";
  int64_t shard_size = 256;
  int64_t teacher_batch = 16;
  // The teacher's precision: f32 (exact, the default) or bf16 (autocast: matmuls in bf16, about 5x
  // the images/s on an H200; logits within bf16 rounding). A cache is made in one of them.
  std::string teacher_dtype = "f32";
  // Images per VLM forward. 1 (default): every image alone, so its values do not depend on the
  // others (deterministic mode); more: one left-padded batch (a GPU's throughput), equal to the
  // single-image values to rounding.
  int64_t vlm_batch = 1;
  int workers = 2;
  int cap_long_side = 1024;  // the reference shrinks larger images (Lanczos) before the VLM
  // generate mode (the reference's settings, merged with generation_config.json)
  double temperature = 0.8;
  int max_new_tokens = 256;
  uint64_t seed = 0;  // each image samples from prompt_seed(seed, its pixels), as classify and chat
  bool cuda_graph = false;  // decode with fixed shapes, one CUDA graph per token on a GPU
};

// Format version 2: image paths stored relative to the cache folder, the models' parameter counts,
// and each shard's split and inputs in its metadata. Version 1 caches are read, not resumed.
constexpr int kFeatureCacheVersion = 2;

// Runs (or resumes) the extraction; returns the manifest. The cache folder is locked for the run
// (a second writer refuses); a cache of other inputs is refused naming the first field that
// differs; the same images moved elsewhere (same contents and labels) are the same cache.
nlohmann::json extract_features(const ExtractOptions& options);

// What a pipeline part was made from: the VLM checkpoint's identity and the adapter's (null when
// none). Heads, gates, caches and bundles record it; check_same_vlm refuses parts of two VLMs,
// naming both descriptions and the first field that differs.
nlohmann::json vlm_identity(const std::string& vlm, const std::string& adapter);
nlohmann::json vlm_identity_of_cache(const nlohmann::json& manifest);
void check_same_vlm(const nlohmann::json& a, const std::string& a_what, const nlohmann::json& b, const std::string& b_what);


struct FeatureCache {
  std::string dir;
  nlohmann::json manifest;
  std::vector<std::string> labels, paths;
  torch::Tensor features;        // [N, d] float32
  torch::Tensor teacher_logits;  // [N, C] float32
  torch::Tensor vlm_scores;      // [N, C] float32: sum of log-probabilities of each label's answer
  torch::Tensor vlm_answer;      // [N] int64: the VLM's class (-1: unparsable answer)
  std::vector<std::string> vlm_text;  // generate mode: the VLM's answers, [N] (score mode: empty)
  torch::Tensor targets;         // [N] int64: the true labels

  static FeatureCache load(const std::string& dir);
  int64_t size() const { return targets.size(0); }
  int64_t num_classes() const { return static_cast<int64_t>(labels.size()); }
  // The VLM's answer as the gate's input: "onehot" (the paper; all zeros when unparsable) or
  // "scores" (the label-score distribution).
  torch::Tensor vlm_input(const std::string& kind) const;
};

// The images of cache `dir` (its manifest's entries) whose content also appears in cache
// `other_dir`: their paths. Reads only the two manifests. A validation or test split that shares
// images with the training split measures memory, not generalization.
std::vector<std::string> images_also_in(const std::string& dir, const std::string& other_dir);

// Warns on stderr (unless quiet) and returns the count: "N of the <what> cache's images are also
// in the training cache ...".
int64_t warn_shared_images(const std::string& what, const std::string& dir, const std::string& train_dir, bool quiet);

}  // namespace emovlm
