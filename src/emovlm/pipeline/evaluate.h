// Evaluation over a cached test split: accuracy, macro-F1, per-class recall and confusion of the
// VLM, the teacher, the distillation head and the gate, each with 95% bootstrap intervals; the gain
// of EmoVLM-KD over each of its inputs (paired interval, McNemar's exact test) and the oracle
// (either input right); the complementarity splits (Figure 1); parameter counts (Table 2); the
// validation curves of stages 2 and 3; written as JSON and Markdown.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace emovlm {

struct EvaluateOptions {
  std::string cache, distill, gate, out;  // out: directory for report.json / report.md ("" = none)
  int64_t bootstrap = 1000;               // resamples for the 95% intervals (0: none)
  uint64_t seed = 0;                      // of the resampling
};

nlohmann::json evaluate_cache(const EvaluateOptions& options);
std::string evaluation_markdown(const nlohmann::json& report);
// The part of it on the gate: its gain over each input (or whether it beats them), the oracle, and
// how the intervals were made.
std::string gain_markdown(const nlohmann::json& report);
// The Table 1/2 rows (model, parameters, accuracy %, macro-F1 %, unparsable) of (name, report)
// pairs, each report a classification report with "parameters" (evaluate's models, teacher eval).
std::string models_table_markdown(const std::vector<std::pair<std::string, nlohmann::json>>& rows);

}  // namespace emovlm
