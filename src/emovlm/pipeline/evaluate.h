// Evaluation over a cached test split: accuracy, macro-F1, per-class recall and confusion of the
// VLM, the teacher, the distillation head and the gate; the complementarity splits (Figure 1);
// parameter counts (Table 2); written as JSON and Markdown.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace emovlm {

struct EvaluateOptions {
  std::string cache, distill, gate, out;  // out: directory for report.json / report.md ("" = none)
};

nlohmann::json evaluate_cache(const EvaluateOptions& options);
std::string evaluation_markdown(const nlohmann::json& report);
// The Table 1/2 rows (model, parameters, accuracy %, macro-F1 %, unparsable) of (name, report)
// pairs, each report a classification report with "parameters" (evaluate's models, teacher eval).
std::string models_table_markdown(const std::vector<std::pair<std::string, nlohmann::json>>& rows);

}  // namespace emovlm
