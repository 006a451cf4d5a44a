// Stages 2 and 3 from the feature cache: the distillation head (KL to the teacher + CE on the
// pooled visual features) and the gate (the VLM's answer + the head's logits -> the emotion).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/core/device.h"
#include "emovlm/data/feature_cache.h"
#include "emovlm/models/gates.h"
#include "emovlm/models/heads.h"
#include "emovlm/train/trainer.h"

namespace emovlm {

struct DistillOptions {
  std::string cache, val_cache, out;
  std::vector<int64_t> hidden{1024};
  double alpha = 0.5, temperature = 2.0, dropout = 0.1;
  int64_t epochs = 5;
  // The run takes at least this many optimizer steps: when `epochs` passes over a small cache
  // would take fewer, it takes more epochs (0: exactly `epochs`).
  int64_t min_steps = 2000;
  // Early stopping on the validation cache: epochs without a better accuracy before the run stops
  // (-1: a quarter of the run's epochs, at least 5; 0: never).
  int64_t patience = -1;
  int64_t batch_size = 256;  // the reference code uses 1 (--batch-size 1)
  // the head's matmuls (bf16: AMX on the CPU); f32 for exact float32
  ComputeDtype compute_dtype = ComputeDtype::bf16;
  uint64_t seed = 0;
  bool resume = false;     // continue the run in `out`
  bool overwrite = false;  // start over in an `out` that holds a run
  bool quiet = false;
  int64_t save_every_steps = 0;
  // Where the head trains (the cache and the head go there); what the run writes is the same on
  // any device.
  ComputeDevice device;  // auto
  OptimConfig optim = [] {
    OptimConfig o;
    o.lr = 1e-3;  // the paper; the reference code uses 1e-5 (--lr 1e-5)
    o.weight_decay = 1e-4;
    return o;
  }();
};

struct GateOptions {
  std::string cache, val_cache, distill, out;
  std::string kind = "concat";
  std::string vlm_input = "onehot";  // onehot (the paper) | scores
  // What the gate learns from (see gate_fit_ons()): "train" (the paper: the training cache, where
  // the head has seen every image), "val" (the validation cache) or "crossfit" (the training
  // cache with each image's head output from a head trained on the other `folds` - 1 folds).
  // README.md "Choosing the gate's data" has the measurements behind the default.
  std::string fit_on = "train";
  int64_t folds = 5;
  std::string crossfit_dir;  // the fold heads' folder ("": OUT/crossfit); a finished fold is reused
  // "average": start as the average of the inputs' log-probabilities (GateImpl::init_average);
  // "random": PyTorch's default initialisation, as the reference.
  std::string init = "average";
  int64_t epochs = 10, batch_size = 32;
  int64_t min_steps = 2000, patience = -1;  // as DistillOptions
  uint64_t seed = 0;
  bool resume = false, overwrite = false;
  int64_t save_every_steps = 0;
  // as DistillOptions (the cross-fit's fold heads train there too)
  ComputeDevice device;  // auto
  OptimConfig optim = [] {
    OptimConfig o;
    o.lr = 1e-3;  // the paper; the reference code uses 1e-4
    o.weight_decay = 1e-4;
    return o;
  }();
};

// Trains the head; writes OUT/head.safetensors (+ its config in the metadata), classes.json,
// metrics.jsonl, checkpoint.safetensors, report.json. Returns the report.
nlohmann::json train_distill_head(const DistillOptions& options);
nlohmann::json train_gate(const GateOptions& options);

const std::vector<std::string>& gate_fit_ons();

}  // namespace emovlm
