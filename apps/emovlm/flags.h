// The flags several subcommands share, defined once: each has one name, one description and one
// default wherever it appears, and sits in a named group of the subcommand's --help.
//
// Vocabulary: --vlm is a Qwen2-VL checkpoint folder (--model is kept as an alias), --adapter a
// PEFT LoRA adapter, --teacher/--distill/--gate/--bundle folders written by emovlm; --data a
// dataset root or manifest; --out what a command writes; --batch the images of one forward pass
// at inference, --batch-size the examples of one optimizer step in training; --device and
// --dtype where the models run; --seed the seed of a command's randomness.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "emovlm/core/device.h"
#include "emovlm/data/dataset.h"
#include "emovlm/train/trainer.h"

namespace emovlm::cli {

// The --help groups.
inline const char* const kModelsGroup = "Models";
inline const char* const kDataGroup = "Data";
inline const char* const kOutputGroup = "Output";
inline const char* const kDeviceGroup = "Device";
inline const char* const kTrainingGroup = "Training";
inline const char* const kOptimizerGroup = "Optimizer";
inline const char* const kGlobalGroup = "Global flags (before or after the subcommand)";

// The flags of every command: -q/--quiet, --threads, --dist-backend, --dist-timeout,
// --dist-overlap.
struct GlobalFlags {
  bool quiet = false;
  int threads = 0;
  std::string dist_backend = "auto";
  double dist_timeout_s = 1800;
  bool dist_overlap = true;
};
void add_global_flags(CLI::App* cmd, GlobalFlags& g);

// ---- Models
CLI::Option* add_vlm_flag(CLI::App* cmd, std::string& vlm, bool required = true);
CLI::Option* add_adapter_flag(CLI::App* cmd, std::string& adapter, bool required = false);
CLI::Option* add_teacher_flag(CLI::App* cmd, std::string& teacher);
CLI::Option* add_distill_flag(CLI::App* cmd, std::string& distill);
CLI::Option* add_gate_dir_flag(CLI::App* cmd, std::string& gate, bool required);
CLI::Option* add_bundle_flag(CLI::App* cmd, std::string& bundle, bool required = true);
CLI::Option* add_cuda_graph_flag(CLI::App* cmd, bool& cuda_graph);

// ---- Data
CLI::Option* add_data_flag(CLI::App* cmd, std::string& data, const std::string& what,
                           bool required = true);
// --cache (the training split's cache, required) and --val-cache (optional; `val_use`: what the
// command does with it).
void add_cache_flags(CLI::App* cmd, std::string& cache, std::string& val_cache,
                     const std::string& val_use);
CLI::Option* add_split_flag(CLI::App* cmd, std::string& split, const std::string& prefix = "");
// --labels, --val-fraction, --split-seed (prefix: e.g. "--data: " where they apply only with it).
void add_dataset_flags(CLI::App* cmd, DatasetOptions& d, const std::string& prefix = "",
                       bool with_labels = true);
CLI::Option* add_labels_flag(CLI::App* cmd, std::string& labels, const std::string& what);

// ---- Output
CLI::Option* add_out_flag(CLI::App* cmd, std::string& out, const std::string& what,
                          bool required = true);
CLI::Option* add_json_flag(CLI::App* cmd, bool& as_json, const std::string& what = "print JSON");

// ---- Device
// --device: parsed into `device` as the command line is read ("auto" resolved then); `device`'s
// value is the default.
CLI::Option* add_device_flag(CLI::App* cmd, ComputeDevice& device);
// --dtype (or `name`): bf16, f16 (unless !with_f16) or f32, parsed into `dtype`, whose value is
// the default.
CLI::Option* add_dtype_flag(CLI::App* cmd, ComputeDtype& dtype, const std::string& what,
                            const std::string& name = "--dtype", bool with_f16 = true);
CLI::Option* add_autocast_flag(CLI::App* cmd, std::string& autocast);
// --workers: threads that read and decode images while the model runs.
CLI::Option* add_workers_flag(CLI::App* cmd, int& workers);

// ---- Batches: --batch (inference: images per forward), --batch-size (training: per step)
// `alias`: an older spelling still accepted (e.g. "--batch-size").
CLI::Option* add_batch_flag(CLI::App* cmd, int& batch, const std::string& what);
CLI::Option* add_batch_flag(CLI::App* cmd, int64_t& batch, const std::string& what,
                            const std::string& alias = "");
CLI::Option* add_batch_size_flag(CLI::App* cmd, int64_t& batch_size, const std::string& what = "");

// ---- Training: --epochs, --seed, --resume, --overwrite, --save-every, and the optimizer's
CLI::Option* add_seed_flag(CLI::App* cmd, uint64_t& seed, const std::string& what,
                           const std::string& group = kTrainingGroup);
CLI::Option* add_epochs_flag(CLI::App* cmd, int64_t& epochs,
                             const std::string& what = "passes over the training data");
void add_run_flags(CLI::App* cmd, bool& resume, bool& overwrite, int64_t& save_every_steps);
void add_optim_flags(CLI::App* cmd, OptimConfig& o);
// The step budget and early stopping of stages 2 and 3: --epochs, --min-steps, --patience.
void add_budget_flags(CLI::App* cmd, int64_t& epochs, int64_t& min_steps, int64_t& patience);

// Checks of values at the edge, so that a bad one is refused while parsing, naming the flag.
CLI::Validator at_least(int64_t minimum);  // an integer >= minimum

}  // namespace emovlm::cli
