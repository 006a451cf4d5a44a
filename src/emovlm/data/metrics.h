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
  std::vector<double> recall, precision, f1;    // every class (0 where undefined)
  std::vector<int64_t> support;                 // images of each class in the truth
  std::vector<bool> present;                    // in the truth or among the predictions
  std::vector<std::vector<int64_t>> confusion;  // [truth][prediction]
  int64_t unparsable = 0;                       // predictions of -1 (counted as wrong)

  nlohmann::json to_json(const std::vector<std::string>& labels) const;
};

// pred[i] = -1 means "no answer" (wrong, never a class).
ClassificationReport classification_report(const std::vector<int>& pred,
                                           const std::vector<int>& truth, int num_classes);

struct Complementarity {
  int64_t both_right = 0, only_a = 0, only_b = 0, both_wrong = 0;
  nlohmann::json to_json(const std::string& a, const std::string& b) const;
};
Complementarity complementarity(const std::vector<int>& a, const std::vector<int>& b,
                                const std::vector<int>& truth);

// Percentile bootstrap intervals (resampling the images with replacement, `resamples` times, from
// SplitMix64(seed)) at confidence `level`: of accuracy, macro-F1 and each class's F1.
struct Interval {
  double lo = 0, hi = 0;
};
struct BootstrapIntervals {
  Interval accuracy, macro_f1;
  std::vector<Interval> f1;  // per class
};
BootstrapIntervals bootstrap_intervals(const std::vector<int>& pred, const std::vector<int>& truth,
                                       int num_classes, int64_t resamples, uint64_t seed,
                                       double level = 0.95);
// The interval of the mean of 0/1 outcomes (e.g. "either model right"), and of the paired
// difference of two models' accuracies (accuracy(a) - accuracy(b), the same resampled images).
Interval bootstrap_mean(const std::vector<int>& right, int64_t resamples, uint64_t seed,
                        double level = 0.95);
Interval bootstrap_accuracy_difference(const std::vector<int>& a, const std::vector<int>& b,
                                       const std::vector<int>& truth, int64_t resamples,
                                       uint64_t seed, double level = 0.95);
// McNemar's exact test of two paired classifiers: b images only the first gets right, c only the
// second; the two-sided binomial p-value of min(b, c) among b + c discordant images at 1/2
// (1 when b + c = 0).
double mcnemar_exact_p(int64_t b, int64_t c);

// A Markdown table: header row and rows of cells.
std::string markdown_table(const std::vector<std::string>& header,
                           const std::vector<std::vector<std::string>>& rows);

}  // namespace emovlm
