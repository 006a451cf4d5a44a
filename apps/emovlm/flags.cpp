// The shared flag groups of the subcommands (see flags.h).
#include "flags.h"

#include "emovlm/core/error.h"

namespace emovlm::cli {

namespace {

CLI::Option* in_group(CLI::Option* o, const char* group) {
  o->group(group);
  return o;
}

// The value `parse` reads (its error names the flag), its error made a parse error: the command
// does not start.
template <typename Parse>
auto parsed(Parse parse) {
  try {
    return parse();
  } catch (const Error& e) {
    throw CLI::ValidationError(std::string(e.what()));
  }
}

}  // namespace

CLI::Validator at_least(int64_t minimum) {
  return CLI::Validator(
      [minimum](std::string& s) -> std::string {
        int64_t v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not an integer";
        if (v < minimum) return cat(s, " is less than ", minimum);
        return "";
      },
      cat(">= ", minimum));
}

void add_global_flags(CLI::App* cmd, GlobalFlags& g) {
  in_group(cmd->add_flag("-q,--quiet", g.quiet, "no progress bars"), kGlobalGroup);
  in_group(cmd->add_option("--threads", g.threads,
                           "CPU threads (default: OMP_NUM_THREADS, else every core, shared among "
                           "the processes a launcher started on this machine)")
               ->check(CLI::NonNegativeNumber),
           kGlobalGroup);
  in_group(cmd->add_option("--dist-backend", g.dist_backend,
                           "under torchrun or Slurm: the collectives' backend, auto (NCCL on CUDA "
                           "when built with it, else Gloo), gloo or nccl")
               ->capture_default_str()
               ->check(CLI::IsMember({"auto", "gloo", "nccl"})),
           kGlobalGroup);
  in_group(cmd->add_option("--dist-timeout", g.dist_timeout_s,
                           "under torchrun or Slurm: seconds a rank waits for the others before "
                           "failing")
               ->capture_default_str()
               ->check(CLI::PositiveNumber),
           kGlobalGroup);
  in_group(cmd->add_option("--dist-overlap", g.dist_overlap,
                           "under torchrun or Slurm: true sums the gradients while backward runs, "
                           "bucket by bucket; false after it")
               ->default_str("true"),
           kGlobalGroup);
}

// ---- Models

CLI::Option* add_vlm_flag(CLI::App* cmd, std::string& vlm, bool required) {
  CLI::Option* o =
      cmd->add_option("--vlm,--model", vlm,
                      "a Qwen2-VL checkpoint folder (config.json, safetensors, tokenizer.json)");
  if (required) o->required();
  return in_group(o, kModelsGroup);
}

CLI::Option* add_adapter_flag(CLI::App* cmd, std::string& adapter, bool required) {
  const std::string what =
      "a PEFT LoRA adapter folder (`emovlm tune`'s output), merged into the VLM's weights at load";
  CLI::Option* o =
      cmd->add_option("--adapter", adapter, required ? what : what + " (default: none)");
  if (required) o->required();
  return in_group(o, kModelsGroup);
}

CLI::Option* add_teacher_flag(CLI::App* cmd, std::string& teacher) {
  return in_group(cmd->add_option("--teacher", teacher,
                                  "a teacher folder written by `emovlm teacher train` (ViT, "
                                  "ResNet or VGG)")
                      ->required(),
                  kModelsGroup);
}

CLI::Option* add_distill_flag(CLI::App* cmd, std::string& distill) {
  return in_group(cmd->add_option("--distill", distill, "a head folder written by `emovlm distill`")
                      ->required(),
                  kModelsGroup);
}

CLI::Option* add_gate_dir_flag(CLI::App* cmd, std::string& gate, bool required) {
  CLI::Option* o = cmd->add_option(
      "--gate", gate,
      required ? "a gate folder written by `emovlm gate`"
               : "a gate folder written by `emovlm gate` (default: none, the head and VLM only)");
  if (required) o->required();
  return in_group(o, kModelsGroup);
}

CLI::Option* add_bundle_flag(CLI::App* cmd, std::string& bundle, bool required) {
  CLI::Option* o = cmd->add_option("--bundle", bundle, "a folder written by `emovlm bundle`");
  if (required) o->required();
  return in_group(o, kModelsGroup);
}

CLI::Option* add_cuda_graph_flag(CLI::App* cmd, bool& cuda_graph) {
  return in_group(cmd->add_flag("--cuda-graph", cuda_graph,
                                "generating: decode with fixed shapes, replayed as one CUDA graph "
                                "per token on a GPU (the same tokens, less launch overhead)"),
                  kDeviceGroup);
}

// ---- Data

CLI::Option* add_data_flag(CLI::App* cmd, std::string& data, const std::string& what,
                           bool required) {
  CLI::Option* o = cmd->add_option("--data", data, what);
  if (required) o->required();
  return in_group(o, kDataGroup);
}

void add_cache_flags(CLI::App* cmd, std::string& cache, std::string& val_cache,
                     const std::string& val_use) {
  in_group(cmd->add_option("--cache", cache, "the training split's cache (`emovlm extract`)")
               ->required(),
           kDataGroup);
  in_group(cmd->add_option("--val-cache", val_cache,
                           "the validation split's cache: " + val_use + " (default: none)"),
           kDataGroup);
}

CLI::Option* add_split_flag(CLI::App* cmd, std::string& split, const std::string& prefix) {
  return in_group(cmd->add_option("--split", split, prefix + "train, val or test")
                      ->capture_default_str()
                      ->check(CLI::IsMember({"train", "val", "test"})),
                  kDataGroup);
}

CLI::Option* add_labels_flag(CLI::App* cmd, std::string& labels, const std::string& what) {
  return in_group(cmd->add_option("--labels", labels, what), kDataGroup);
}

void add_dataset_flags(CLI::App* cmd, DatasetOptions& d, const std::string& prefix,
                       bool with_labels) {
  if (with_labels)
    add_labels_flag(cmd, d.labels,
                    prefix +
                        "mikels8, ekman6, binary or a,b,c (default: the folder names or the "
                        "manifest's labels)");
  in_group(cmd->add_option("--val-fraction", d.val_fraction,
                           prefix + "validation share of train/ when there is no val/")
               ->capture_default_str()
               ->check(CLI::Range(0.0, 1.0)),
           kDataGroup);
  in_group(cmd->add_option("--split-seed", d.split_seed, prefix + "seed of that split")
               ->capture_default_str(),
           kDataGroup);
}

// ---- Output

CLI::Option* add_out_flag(CLI::App* cmd, std::string& out, const std::string& what, bool required) {
  CLI::Option* o = cmd->add_option("--out", out, what);
  if (required) o->required();
  return in_group(o, kOutputGroup);
}

CLI::Option* add_json_flag(CLI::App* cmd, bool& as_json, const std::string& what) {
  return in_group(cmd->add_flag("--json", as_json, what), kOutputGroup);
}

// ---- Device

CLI::Option* add_device_flag(CLI::App* cmd, ComputeDevice& device) {
  return in_group(cmd->add_option_function<std::string>(
                         "--device",
                         [&device](const std::string& name) {
                           device = parsed([&] { return parse_compute_device(name, "--device"); });
                         },
                         "cpu, cuda, cuda:N or auto (a GPU when there is one: under a launcher, "
                         "the GPU of the process's local rank)")
                      ->type_name("DEVICE")
                      ->default_str("auto"),
                  kDeviceGroup);
}

CLI::Option* add_dtype_flag(CLI::App* cmd, ComputeDtype& dtype, const std::string& what,
                            const std::string& name, bool with_f16) {
  return in_group(cmd->add_option_function<std::string>(
                         name,
                         [&dtype, name](const std::string& value) {
                           dtype = parsed([&] { return parse_compute_dtype(value, name); });
                         },
                         what)
                      ->default_str(dtype_name(dtype))
                      ->check(with_f16 ? CLI::IsMember({"bf16", "f16", "f32"})
                                       : CLI::IsMember({"bf16", "f32"})),
                  kDeviceGroup);
}

CLI::Option* add_autocast_flag(CLI::App* cmd, std::string& autocast) {
  return in_group(
      cmd->add_option("--autocast", autocast, "none or bf16 (mixed precision over float32 weights)")
          ->capture_default_str()
          ->check(CLI::IsMember({"none", "bf16"})),
      kDeviceGroup);
}

CLI::Option* add_workers_flag(CLI::App* cmd, int& workers) {
  return in_group(cmd->add_option("--workers", workers, "threads that read and decode images")
                      ->capture_default_str()
                      ->check(CLI::PositiveNumber),
                  kDeviceGroup);
}

// ---- Batches

CLI::Option* add_batch_flag(CLI::App* cmd, int& batch, const std::string& what) {
  return in_group(
      cmd->add_option("--batch", batch, what)->capture_default_str()->check(CLI::PositiveNumber),
      kDeviceGroup);
}

CLI::Option* add_batch_flag(CLI::App* cmd, int64_t& batch, const std::string& what,
                            const std::string& alias) {
  return in_group(cmd->add_option(alias.empty() ? "--batch" : "--batch," + alias, batch, what)
                      ->capture_default_str()
                      ->check(CLI::PositiveNumber),
                  kDeviceGroup);
}

CLI::Option* add_batch_size_flag(CLI::App* cmd, int64_t& batch_size, const std::string& what) {
  return in_group(cmd->add_option("--batch-size", batch_size,
                                  what.empty() ? "training examples per batch" : what)
                      ->capture_default_str()
                      ->check(CLI::PositiveNumber),
                  kTrainingGroup);
}

// ---- Training

CLI::Option* add_seed_flag(CLI::App* cmd, uint64_t& seed, const std::string& what,
                           const std::string& group) {
  return in_group(cmd->add_option("--seed", seed, what)->capture_default_str(), group.c_str());
}

CLI::Option* add_epochs_flag(CLI::App* cmd, int64_t& epochs, const std::string& what) {
  return in_group(
      cmd->add_option("--epochs", epochs, what)->capture_default_str()->check(CLI::PositiveNumber),
      kTrainingGroup);
}

void add_run_flags(CLI::App* cmd, bool& resume, bool& overwrite, int64_t& save_every_steps) {
  CLI::Option* r = in_group(
      cmd->add_flag("--resume", resume, "continue the run in --out from its last checkpoint"),
      kTrainingGroup);
  in_group(cmd->add_flag("--overwrite", overwrite, "start over in an --out that holds a run")
               ->excludes(r),
           kTrainingGroup);
  in_group(cmd->add_option("--save-every", save_every_steps,
                           "also checkpoint every N optimizer steps (0: at each epoch's end only)")
               ->capture_default_str()
               ->check(CLI::NonNegativeNumber),
           kTrainingGroup);
}

void add_optim_flags(CLI::App* cmd, OptimConfig& o) {
  in_group(cmd->add_option("--lr", o.lr, "the peak learning rate")->capture_default_str(),
           kOptimizerGroup);
  in_group(cmd->add_option("--weight-decay", o.weight_decay,
                           "adam: an L2 term in the gradient; adamw: decoupled decay")
               ->capture_default_str(),
           kOptimizerGroup);
  in_group(cmd->add_option("--optimizer", o.optimizer, "adam or adamw")
               ->capture_default_str()
               ->check(CLI::IsMember({"adam", "adamw"})),
           kOptimizerGroup);
  in_group(cmd->add_option("--schedule", o.schedule,
                           "the learning rate over the steps: constant, warmup (linear warm-up, "
                           "then constant), linear or cosine (each after the warm-up)")
               ->capture_default_str()
               ->check(CLI::IsMember({"constant", "warmup", "linear", "cosine"})),
           kOptimizerGroup);
  in_group(cmd->add_option("--warmup-ratio", o.warmup_ratio,
                           "share of the optimizer steps for the linear warm-up")
               ->capture_default_str()
               ->check(CLI::Range(0.0, 1.0)),
           kOptimizerGroup);
  in_group(cmd->add_option("--max-grad-norm", o.max_grad_norm,
                           "clip the gradients' global norm to this (0: no clipping)")
               ->capture_default_str()
               ->check(CLI::NonNegativeNumber),
           kOptimizerGroup);
  in_group(cmd->add_option("--grad-accum", o.grad_accum,
                           "batches whose gradients add up to one optimizer step")
               ->capture_default_str()
               ->check(CLI::PositiveNumber),
           kOptimizerGroup);
}

void add_budget_flags(CLI::App* cmd, int64_t& epochs, int64_t& min_steps, int64_t& patience) {
  add_epochs_flag(cmd, epochs, "passes over the training data (at least; see --min-steps)");
  in_group(cmd->add_option("--min-steps", min_steps,
                           "train at least this many optimizer steps (more epochs on a small "
                           "cache; 0: exactly --epochs)")
               ->capture_default_str()
               ->check(CLI::NonNegativeNumber),
           kTrainingGroup);
  in_group(cmd->add_option("--patience", patience,
                           "with --val-cache: stop after this many epochs without a better "
                           "validation accuracy (-1: a quarter of the epochs, at least 5; 0: "
                           "never)")
               ->capture_default_str()
               ->check(at_least(-1)),
           kTrainingGroup);
}

}  // namespace emovlm::cli
