// Ablations from one set of caches: the head's depth (the paper's Table 3), the distillation
// weight alpha (Figure 3) and the gate (Table 4). Each writes a Markdown table, a JSON file and a
// PNG bar chart of test accuracy (head and EmoVLM-KD per setting).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace emovlm {

struct AblationOptions {
  std::string kind;  // depth | alpha | gate
  std::string train_cache, val_cache, test_cache, out;
  std::vector<std::string> values;  // empty: the paper's sweep
  int64_t distill_epochs = 5, gate_epochs = 10, batch_size = 256;
  uint64_t seed = 0;
};

nlohmann::json run_ablation(const AblationOptions& options);

}  // namespace emovlm
