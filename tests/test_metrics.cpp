// Classification metrics on hand-computed cases: accuracy, per-class precision/recall/F1,
// macro- and weighted F1 as scikit-learn defines them, the confusion matrix, and the
// complementarity counts of two models.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/data/metrics.h"

using namespace emovlm;

// Four classes, class 3 in neither the truth nor the predictions; one unanswered image (-1).
//   truth 0 0 0 1 1 2 2 2  2 0
//   pred  0 0 1 1 2 2 2 -1 0 0
// tp = (3, 1, 2, 0), fp = (1, 1, 1, 0), fn = (1, 1, 2, 0)
TEST(Metrics, HandComputedReport) {
  const std::vector<int> truth = {0, 0, 0, 1, 1, 2, 2, 2, 2, 0},
                         pred = {0, 0, 1, 1, 2, 2, 2, -1, 0, 0};
  ClassificationReport r = classification_report(pred, truth, 4);
  EXPECT_EQ(r.n, 10);
  EXPECT_DOUBLE_EQ(r.accuracy, 0.6);
  EXPECT_EQ(r.unparsable, 1);
  const std::vector<double> precision = {0.75, 0.5, 2.0 / 3, 0}, recall = {0.75, 0.5, 0.5, 0},
                            f1 = {0.75, 0.5, 4.0 / 7, 0};
  for (int c = 0; c < 4; ++c) {
    EXPECT_DOUBLE_EQ(r.precision[c], precision[c]) << c;
    EXPECT_DOUBLE_EQ(r.recall[c], recall[c]) << c;
    EXPECT_DOUBLE_EQ(r.f1[c], f1[c]) << c;
  }
  EXPECT_EQ(r.support, (std::vector<int64_t>{4, 2, 4, 0}));
  // macro over the three present classes (scikit-learn's labels = truth or prediction), not four
  EXPECT_DOUBLE_EQ(r.macro_f1, (0.75 + 0.5 + 4.0 / 7) / 3);
  EXPECT_DOUBLE_EQ(r.weighted_f1, (0.75 * 4 + 0.5 * 2 + 4.0 / 7 * 4) / 10);
  const std::vector<std::vector<int64_t>> confusion = {
      {3, 1, 0, 0}, {0, 1, 1, 0}, {1, 0, 2, 0}, {0, 0, 0, 0}};
  EXPECT_EQ(r.confusion, confusion);  // [truth][prediction]; the unanswered image is in no cell
  nlohmann::json j = r.to_json({"a", "b", "c", "d"});
  EXPECT_DOUBLE_EQ(j["per_class"]["c"]["f1"].get<double>(), 4.0 / 7);
  EXPECT_EQ(j["per_class"]["a"]["support"].get<int64_t>(), 4);
  EXPECT_DOUBLE_EQ(j["weighted_f1"].get<double>(), r.weighted_f1);
}

// A class that only the predictions name counts in the macro average with F1 0 (precision 0,
// recall 0 by zero division) and weighs nothing in the weighted one.
TEST(Metrics, ClassOnlyPredicted) {
  ClassificationReport r = classification_report({0, 2, 1}, {0, 0, 1}, 3);
  EXPECT_DOUBLE_EQ(r.accuracy, 2.0 / 3);
  EXPECT_DOUBLE_EQ(r.f1[0], 2.0 / 3);
  EXPECT_DOUBLE_EQ(r.f1[1], 1.0);
  EXPECT_DOUBLE_EQ(r.precision[2], 0.0);
  EXPECT_DOUBLE_EQ(r.recall[2], 0.0);
  EXPECT_DOUBLE_EQ(r.macro_f1, (2.0 / 3 + 1.0 + 0.0) / 3);
  EXPECT_DOUBLE_EQ(r.weighted_f1, (2.0 / 3 * 2 + 1.0) / 3);
}

TEST(Metrics, EdgeCasesAndErrors) {
  ClassificationReport empty = classification_report({}, {}, 3);
  EXPECT_EQ(empty.n, 0);
  EXPECT_DOUBLE_EQ(empty.accuracy, 0);
  EXPECT_DOUBLE_EQ(empty.macro_f1, 0);
  ClassificationReport perfect = classification_report({1, 1, 0}, {1, 1, 0}, 5);
  EXPECT_DOUBLE_EQ(perfect.macro_f1, 1.0);  // classes 2..4 absent: not averaged in
  EXPECT_DOUBLE_EQ(perfect.weighted_f1, 1.0);
  EXPECT_THROW(classification_report({0, 1}, {0}, 2), Error);
  EXPECT_THROW(classification_report({0}, {2}, 2), Error);  // a label outside the classes
}

// Complementarity: per image, which of two models is right.
//   truth 0 1 2 0 1 1
//   a     0 1 2 3 0 2   right, right, right, wrong, wrong, wrong
//   b     0 2 2 0 1 3   right, wrong, right, right, right, wrong
TEST(Metrics, ComplementarityCounts) {
  Complementarity c = complementarity({0, 1, 2, 3, 0, 2}, {0, 2, 2, 0, 1, 3}, {0, 1, 2, 0, 1, 1});
  EXPECT_EQ(c.both_right, 2);
  EXPECT_EQ(c.only_a, 1);
  EXPECT_EQ(c.only_b, 2);
  EXPECT_EQ(c.both_wrong, 1);
  nlohmann::json j = c.to_json("vlm", "head");
  EXPECT_EQ(j["only_vlm"].get<int64_t>(), 1);
  EXPECT_EQ(j["only_head"].get<int64_t>(), 2);
  EXPECT_DOUBLE_EQ(j["percent"]["both_right"].get<double>(), 100.0 * 2 / 6);
  EXPECT_DOUBLE_EQ(j["percent"]["both_wrong"].get<double>(), 100.0 / 6);
  EXPECT_THROW(complementarity({0, 1}, {0}, {0, 1}), Error);
}

// McNemar's exact test: hand-computed binomial tails, and (for the larger counts) exact rational
// sums 2 * sum_{i<=min(b,c)} C(b+c, i) / 2^(b+c) evaluated with Python's fractions.
TEST(Metrics, McNemarExactP) {
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(0, 0), 1.0);
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(0, 5), 2.0 / 32);
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(5, 0), 2.0 / 32);
  EXPECT_NEAR(mcnemar_exact_p(1, 9), 2.0 * 11 / 1024, 1e-15);
  EXPECT_NEAR(mcnemar_exact_p(7, 2), 0.1796875, 1e-15);
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(3, 3), 1.0);  // 2 * 42/64 capped at 1
  EXPECT_NEAR(mcnemar_exact_p(40, 60), 0.056887933640980791, 1e-12);
  EXPECT_NEAR(mcnemar_exact_p(120, 80), 0.0056851559967503055, 1e-12);
  EXPECT_THROW(mcnemar_exact_p(-1, 2), Error);
}

// Bootstrap intervals: seeded (the same seed, the same interval), with replacement (an accuracy
// of 0.7 on 400 images has a 95% interval about 2 * 1.96 * sqrt(0.21 / 400) = 0.090 wide), around
// the estimate, degenerate where every resample agrees, and paired for differences.
TEST(Metrics, BootstrapIntervals) {
  std::vector<int> truth, pred;
  for (int i = 0; i < 400; ++i) {
    truth.push_back(i % 4);
    pred.push_back(i % 10 < 7 ? i % 4 : (i + 1) % 4);  // 70% right
  }
  const BootstrapIntervals a = bootstrap_intervals(pred, truth, 4, 1000, 7);
  const BootstrapIntervals b = bootstrap_intervals(pred, truth, 4, 1000, 7);
  const BootstrapIntervals other = bootstrap_intervals(pred, truth, 4, 1000, 8);
  EXPECT_EQ(a.accuracy.lo, b.accuracy.lo);
  EXPECT_EQ(a.accuracy.hi, b.accuracy.hi);
  EXPECT_NE(std::make_pair(a.accuracy.lo, a.accuracy.hi),
            std::make_pair(other.accuracy.lo, other.accuracy.hi));
  EXPECT_LT(a.accuracy.lo, 0.7);
  EXPECT_GT(a.accuracy.hi, 0.7);
  EXPECT_NEAR(a.accuracy.hi - a.accuracy.lo, 0.0898, 0.015);
  const ClassificationReport r = classification_report(pred, truth, 4);
  EXPECT_LT(a.macro_f1.lo, r.macro_f1);
  EXPECT_GT(a.macro_f1.hi, r.macro_f1);
  ASSERT_EQ(a.f1.size(), 4u);
  for (int c = 0; c < 4; ++c) {
    EXPECT_LE(a.f1[c].lo, r.f1[c]) << c;
    EXPECT_GE(a.f1[c].hi, r.f1[c]) << c;
    EXPECT_GT(a.f1[c].hi - a.f1[c].lo, 0.05) << c;
  }
  // all right: every resample has accuracy 1
  const BootstrapIntervals perfect = bootstrap_intervals(truth, truth, 4, 200, 0);
  EXPECT_EQ(perfect.accuracy.lo, 1.0);
  EXPECT_EQ(perfect.accuracy.hi, 1.0);
  const Interval ones = bootstrap_mean(std::vector<int>(50, 1), 200, 0);
  EXPECT_EQ(ones.lo, 1.0);
  EXPECT_EQ(ones.hi, 1.0);
  // paired: a model against itself differs by exactly 0; the truth against a 70% model by +0.3
  // within about the same width as the accuracy's interval
  const Interval same = bootstrap_accuracy_difference(pred, pred, truth, 500, 1);
  EXPECT_EQ(same.lo, 0.0);
  EXPECT_EQ(same.hi, 0.0);
  const Interval gain = bootstrap_accuracy_difference(truth, pred, truth, 1000, 1);
  EXPECT_LT(gain.lo, 0.3);
  EXPECT_GT(gain.hi, 0.3);
  EXPECT_NEAR(gain.hi - gain.lo, 0.0898, 0.015);
  EXPECT_THROW(bootstrap_intervals(pred, truth, 4, 0, 0), Error);
  EXPECT_THROW(bootstrap_intervals({0}, truth, 4, 10, 0), Error);
}
