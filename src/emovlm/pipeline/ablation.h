// Ablations from one set of caches: the head's depth (the paper's Table 3), the distillation
// weight alpha (Figure 3), the gate (Table 4), and what the gate is fit on (gate-data: train, val
// or crossfit for each of the five gates). Each writes a Markdown table, a JSON file and a PNG bar
// chart of test accuracy.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/train/distill.h"

namespace emovlm {

struct AblationOptions {
  std::string kind;  // depth | alpha | gate | gate-data
  std::string train_cache, val_cache, test_cache, out;
  std::vector<std::string> values;  // empty: the paper's sweep (gate-data: train, val, crossfit)
  // The settings of every run: those of `emovlm distill` and `emovlm gate` unless told otherwise
  // (the swept setting, the caches and the output folders are set per run).
  DistillOptions distill;
  GateOptions gate;
};

const std::vector<std::string>& ablation_kinds();
nlohmann::json run_ablation(const AblationOptions& options);

}  // namespace emovlm
