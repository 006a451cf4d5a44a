// The feature cache (written by pipeline/extract.h): what the frozen parts produced for each image
// of a dataset split (the VLM's mean-pooled visual features, its label scores or parsed answer,
// the teacher's logits) as safetensors shards plus a manifest; its reader, and the identity of
// the VLM that every pipeline part records.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/data/cache_manifest.h"

namespace emovlm {

// The manifest's "inputs" digest stored in every shard, and shard k's file name.
uint64_t feature_cache_inputs_hash(const nlohmann::json& inputs);
std::string feature_cache_shard_name(size_t k);

// What a pipeline part was made from: the VLM checkpoint's identity and the adapter's (null when
// none). Heads, gates, caches and bundles record it; check_same_vlm refuses parts of two VLMs,
// naming both descriptions and the first field that differs.
nlohmann::json vlm_identity(const std::string& vlm, const std::string& adapter);
nlohmann::json vlm_identity_of_cache(const nlohmann::json& manifest);
void check_same_vlm(const nlohmann::json& a, const std::string& a_what, const nlohmann::json& b,
                    const std::string& b_what);

struct FeatureCache {
  std::string dir;
  nlohmann::json manifest;
  std::vector<std::string> labels, paths;
  torch::Tensor features;        // [N, d] float32
  torch::Tensor teacher_logits;  // [N, C] float32
  torch::Tensor vlm_scores;      // [N, C] float32: sum of log-probabilities of each label's answer
  torch::Tensor vlm_answer;      // [N] int64: the VLM's class (-1: unparsable answer)
  std::vector<std::string> vlm_text;  // generate mode: the VLM's answers, [N] (score mode: empty)
  torch::Tensor targets;              // [N] int64: the true labels

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
int64_t warn_shared_images(const std::string& what, const std::string& dir,
                           const std::string& train_dir, bool quiet);

}  // namespace emovlm
