// `emovlm ablate`: the paper's sweeps (head depth, alpha, the gate kind) and what the gate is fit
// on, each setting trained and tested from one set of caches.
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/pipeline/ablation.h"

namespace emovlm::cli {

void add_ablate_command(CLI::App& app) {
  auto ab = std::make_shared<AblationOptions>();
  CLI::App* cmd = app.add_subcommand(
      "ablate",
      "Sweep the head depth, alpha, the gate or what it is fit on, from one set of caches");
  cmd->add_option("kind", ab->kind, "depth, alpha, gate or gate-data")
      ->required()
      ->check(CLI::IsMember(ablation_kinds()));
  add_cache_flags(cmd, ab->train_cache, ab->val_cache,
                  "each run keeps its best epoch and stops early on it; gate-data needs it");
  cmd->add_option("--test-cache", ab->test_cache, "the test split's cache")
      ->required()
      ->group(kDataGroup);
  add_out_flag(cmd, ab->out, "the sweep's folder (a run per setting, ablation.md/json/png)");
  cmd->add_option("--values", ab->values,
                  "settings to try, space-separated (default: the paper's sweep; gate-data: train "
                  "val crossfit)");
  cmd->add_option("--gate-kind,--gate", ab->gate.kind, "the gate of the depth and alpha sweeps")
      ->capture_default_str()
      ->check(CLI::IsMember(gate_kinds()));
  cmd->add_option("--fit-on", ab->gate.fit_on,
                  "the gate's --fit-on in the depth, alpha and gate sweeps")
      ->capture_default_str()
      ->check(CLI::IsMember(gate_fit_ons()));
  // each stage's own epochs and batch size
  const auto positive = [cmd](const std::string& name, int64_t& value, const std::string& what) {
    cmd->add_option(name, value, what)
        ->capture_default_str()
        ->check(CLI::PositiveNumber)
        ->group(kTrainingGroup);
  };
  positive("--distill-epochs", ab->distill.epochs, "the head's --epochs");
  positive("--gate-epochs", ab->gate.epochs, "the gate's --epochs");
  positive("--distill-batch-size", ab->distill.batch_size, "the head's --batch-size");
  positive("--gate-batch-size", ab->gate.batch_size, "the gate's --batch-size");
  cmd->add_option_function<int64_t>(
         "--batch-size", [ab](int64_t b) { ab->distill.batch_size = ab->gate.batch_size = b; },
         "both --distill-batch-size and --gate-batch-size (default: each its own)")
      ->check(CLI::PositiveNumber)
      ->group(kTrainingGroup);
  cmd->add_option_function<int64_t>(
         "--min-steps", [ab](int64_t n) { ab->distill.min_steps = ab->gate.min_steps = n; },
         cat("the head's and the gate's --min-steps (default ", ab->distill.min_steps, ")"))
      ->check(CLI::NonNegativeNumber)
      ->group(kTrainingGroup);
  cmd->add_option_function<uint64_t>(
         "--seed", [ab](uint64_t s) { ab->distill.seed = ab->gate.seed = s; },
         cat("the head's and the gate's --seed (default ", ab->distill.seed, ")"))
      ->group(kTrainingGroup);
  add_device_flag(cmd, ab->distill.device);  // the gates train there too
  cmd->callback([ab] {
    ab->gate.device = ab->distill.device;
    std::cout << run_ablation(*ab)["markdown"].get<std::string>();
  });
}

}  // namespace emovlm::cli
