// Extraction into the feature cache (data/feature_cache.h): one pass over a dataset split
// computes what the frozen parts produce, written as shards plus a manifest. Interrupted runs
// resume at the next shard; a cache whose inputs changed (models, adapter, images, settings) is
// refused.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/core/device.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/feature_cache.h"

namespace emovlm {

struct ExtractOptions {
  std::string vlm, adapter, teacher, data, split = "train", out;
  DatasetOptions dataset;
  std::string vlm_mode = "score";  // score: label scores (deterministic) | generate: sample + parse
  ComputeDtype dtype = ComputeDtype::bf16;
  ComputeDevice device;  // auto
  int64_t shard_size = 256;
  int64_t teacher_batch = 16;
  // The teacher's precision: f32 (exact, the default) or bf16 (autocast: matmuls in bf16, about 5x
  // the images/s on an H200; logits within bf16 rounding). A cache is made in one of them.
  ComputeDtype teacher_dtype = ComputeDtype::f32;
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

// Runs (or resumes) the extraction; returns the manifest. The cache folder is locked for the run
// (a second writer refuses); a cache of other inputs is refused naming the first field that
// differs; the same images moved elsewhere (same contents and labels) are the same cache.
nlohmann::json extract_features(const ExtractOptions& options);

}  // namespace emovlm
