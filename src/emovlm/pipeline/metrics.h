// Classification metrics and reports: accuracy, macro- and weighted F1, per-class precision,
// recall and F1, confusion matrix, and the complementarity split of two models (the paper's
// Figure 1). The averages follow scikit-learn's f1_score(average="macro" / "weighted",
// zero_division=0) over the classes present in the truth or among the answered predictions: a
// class that no image has and no answer names does not count; an unanswered image (-1) is a
// wrong prediction, not a class.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace emovlm {

struct ClassificationReport {
  int64_t n = 0;
  double accuracy = 0;
  double macro_f1 = 0;     // unweighted mean of f1 over the present classes
  double weighted_f1 = 0;  // mean of f1 weighted by support (images of the class)
  std::vector<double> recall, precision, f1;  // every class (0 where undefined)
  std::vector<int64_t> support;               // images of each class in the truth
  std::vector<bool> present;                  // in the truth or among the predictions
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
