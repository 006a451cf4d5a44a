// `emovlm evaluate`: accuracy, macro-F1, confusion and complementarity of the VLM, the head and
// EmoVLM-KD on a test cache.
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/pipeline/evaluate.h"

namespace emovlm::cli {

void add_evaluate_command(CLI::App& app) {
  auto e = std::make_shared<EvaluateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "evaluate", "Accuracy, macro-F1, confusion and complementarity on a test cache");
  cmd->add_option("--cache", e->cache, "the test split's cache (`emovlm extract`)")
      ->required()
      ->group(kDataGroup);
  add_distill_flag(cmd, e->distill);
  add_gate_dir_flag(cmd, e->gate, false);
  add_out_flag(
      cmd, e->out,
      "write report.json, report.md and report.html in this folder (default: print the tables "
      "only)",
      false);
  cmd->add_option("--bootstrap", e->bootstrap, "resamples for the 95% intervals (0: none)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  add_seed_flag(cmd, e->seed, "the bootstrap's resampling", kOutputGroup);
  cmd->callback([e] { std::cout << evaluation_markdown(evaluate_cache(*e)); });
}

}  // namespace emovlm::cli
