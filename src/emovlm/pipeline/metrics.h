// Classification metrics and reports: accuracy, macro-F1, per-class recall, confusion matrix,
// and the complementarity split of two models (the paper's Figure 1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace emovlm {

struct ClassificationReport {
  int64_t n = 0;
  double accuracy = 0, macro_f1 = 0;
  std::vector<double> recall, precision, f1;
  std::vector<std::vector<int64_t>> confusion;  // [truth][prediction]
  int64_t unparsable = 0;                       // predictions of -1 (counted as wrong)

  nlohmann::json to_json(const std::vector<std::string>& labels) const;
};

// pred[i] = -1 means "no answer" (wrong, never a class).
ClassificationReport classification_report(const std::vector<int>& pred, const std::vector<int>& truth, int num_classes);

struct Complementarity {
  int64_t both_right = 0, only_a = 0, only_b = 0, both_wrong = 0;
  nlohmann::json to_json(const std::string& a, const std::string& b) const;
};
Complementarity complementarity(const std::vector<int>& a, const std::vector<int>& b, const std::vector<int>& truth);

// A Markdown table: header row and rows of cells.
std::string markdown_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

}  // namespace emovlm
