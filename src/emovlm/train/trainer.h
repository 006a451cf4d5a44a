// The training loop every stage shares: Adam/AdamW, learning-rate schedules, gradient clipping
// and accumulation, checkpoints in safetensors (trainable weights and buffers, optimizer state,
// step, epoch, RNG state, config, classes) written atomically, exact resume, per-epoch validation
// with the best checkpoint kept, metrics as JSON lines, a progress bar, and a stop on NaN/Inf
// losses.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/core/output_lock.h"

namespace emovlm {

struct OptimConfig {
  std::string optimizer = "adam";  // adam (L2 weight decay, as torch.optim.Adam) | adamw
  double lr = 1e-3;
  double weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  std::string schedule =
      "constant";             // constant | warmup (linear warm-up, then constant) | linear | cosine
  double warmup_ratio = 0.0;  // of all optimizer steps
  double max_grad_norm = 0.0;  // 0: no clipping
  int grad_accum = 1;          // batches per optimizer step

  nlohmann::json to_json() const;
  // The fields to_json writes (each optional: absent ones keep their defaults); `where` names the
  // file in errors.
  static OptimConfig from_json(const nlohmann::json& j, const std::string& where);
  void validate() const;
  // The learning rate at optimizer step `step` (0-based) of `total`.
  double lr_at(int64_t step, int64_t total) const;
};

struct TrainConfig {
  std::string out_dir;
  int64_t epochs = 1;
  uint64_t seed = 0;
  bool resume = false;
  int64_t save_every_steps = 0;  // also checkpoint every N optimizer steps (0: each epoch only)
  // Early stopping: stop after this many epochs without a better validation accuracy (0: never;
  // only with validation). A resumed run that had stopped stays stopped.
  int64_t patience = 0;
  // Validate the starting weights too (a fresh run, before epoch 1): when no epoch beats them,
  // the best file holds them (best_epoch -1). For a model that starts as a sensible combination.
  bool validate_start = false;
  OptimConfig optim;
  nlohmann::json stage_config;       // stored in every checkpoint
  std::vector<std::string> classes;  // stored, and checked on resume
  std::string progress_label = "train";
  std::string unit = "img";
  // "bf16": each batch's forward and loss under autocast on the parameters' device (matmuls in
  // bfloat16, float32 master weights and optimizer), as torch.autocast; "none": as the dtypes are.
  std::string autocast = "none";
};

// The fields every stage sets; the rest keep their defaults.
TrainConfig train_config(const std::string& out_dir, int64_t epochs, uint64_t seed, bool resume,
                         const OptimConfig& optim, const std::string& progress_label);

// What a stage provides: its data by (epoch, batch index) and its validation.
struct StageHooks {
  // Prepares epoch `epoch`, skipping its first `skip` batches; returns the batches in the epoch.
  std::function<size_t(int64_t epoch, size_t skip)> begin_epoch;
  // The loss of the next batch (mean over its examples) and how many examples it had (0: skip).
  std::function<std::pair<torch::Tensor, int64_t>(int64_t epoch, size_t batch)> loss;
  // Validation accuracy after an epoch (NaN: no validation).
  std::function<double(int64_t epoch)> validate;
  // What the current batch holds (image paths), for the NaN report.
  std::function<std::vector<std::string>()> describe_batch;
  // Why an epoch had no usable example (the unreadable images, say), for the error that stops it.
  std::function<std::string()> describe_empty_epoch;
  // How several processes share the work (dist/process_group.h):
  // false: every process is asked for every batch and computes its share of the batch's rows
  //   (dist::shard_rows), a mean over its rows and their count;
  // true: a batch is one example, and the batches of an optimizer step are dealt to the
  //   processes in turn: loss() is called only for the batches owns_batch() gives this process.
  bool one_example_per_batch = false;
};

// With one example per batch: whether this process computes batch `batch` of an epoch (all of
// them in a single process). The batches of a step (grad_accum of them, counted from the epoch's
// first) go to the processes in turn.
bool owns_batch(size_t batch, int grad_accum);

// The output folder of a training command, held for the whole run: locked against a second
// writer (core/output_lock.h), and refused when it holds an earlier run (a checkpoint or metrics
// in `state_dir`) unless resuming (continue it) or overwriting (start over; the earlier run's
// files are replaced one by one as the new run writes its own, never emptied first). Data
// parallel, only rank 0 locks and checks.
class RunOutput {
 public:
  RunOutput(const std::string& out, const std::string& state_dir, bool resume, bool overwrite);

 private:
  std::unique_ptr<OutputLock> lock_;  // rank 0's (the other processes write nothing)
};

struct FitResult {
  int64_t epochs_run = 0;      // epochs the run has finished, before a resume included
  bool stopped_early = false;  // by `patience`
  int64_t steps = 0;
  double best_val = std::numeric_limits<double>::quiet_NaN();
  int64_t best_epoch = -1;
  double last_train_loss = 0;
  std::string checkpoint_path, best_path, metrics_path;
};

// Trains the module's parameters that require grad. Writes OUT/checkpoint.safetensors (latest),
// OUT/best.safetensors (the weights of the best validation epoch, or the last when there is no
// validation) and OUT/metrics.jsonl (one line per epoch, rewritten atomically; a resumed run keeps
// the lines of the epochs its checkpoint holds). An epoch without a usable example is an error.
// Returns with the best file's weights in the module.
//
// Data parallel when the process group is active (dist/process_group.h): every process holds the
// whole module and optimizer; the gradients of each step are summed over the processes, scaled
// so that the step equals one process's step over the same global batch (the batch size and the
// schedule do not depend on the number of processes, nor does a checkpoint: a run resumes on
// another number of processes). Rank 0 writes every file and reads the checkpoint to resume;
// the others receive its tensors. The stage's validate hook must return the same value on every
// process (teacher train: each validates its share and the counts are summed; distill and gate
// validate their whole cached set, a matter of milliseconds). BatchNorm's running statistics are
// rank 0's, sent to the others after each epoch; dropout draws its masks on each process.
FitResult fit(torch::nn::Module& model, const TrainConfig& config, StageHooks& hooks);

// One step of an optimizer made as torch::optim::Adam (adamw = false) or AdamW (true), computed as
// their step() computes it (bitwise on the CPU) but with each update a multi-tensor (_foreach)
// operation over all parameters that share a step count: on a GPU a handful of kernels per step
// instead of about ten per parameter tensor. The state stays in the optimizer's own state objects.
void multi_tensor_adam_step(torch::optim::Optimizer& optimizer, bool adamw);

// Reads the "model.*" weights and buffers of a checkpoint or best file into the module (names
// checked).
void load_trained_weights(torch::nn::Module& model, const std::string& path);
// The metadata of such a file (config, classes, epoch, ...).
nlohmann::json checkpoint_info(const std::string& path);

}  // namespace emovlm
