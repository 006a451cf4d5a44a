// Classification metrics.
#include "emovlm/data/metrics.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/data/dataset.h"

namespace emovlm {

using json = nlohmann::json;

ClassificationReport classification_report(const std::vector<int>& pred,
                                           const std::vector<int>& truth, int C) {
  if (pred.size() != truth.size())
    throw Error(cat("metrics: ", pred.size(), " predictions for ", truth.size(), " labels"));
  ClassificationReport r;
  r.n = static_cast<int64_t>(truth.size());
  r.confusion.assign(C, std::vector<int64_t>(C, 0));
  int64_t right = 0;
  std::vector<int64_t> tp(C, 0), fp(C, 0), fn(C, 0);
  for (size_t i = 0; i < pred.size(); ++i) {
    const int t = truth[i], p = pred[i];
    if (t < 0 || t >= C) throw Error(cat("metrics: label ", t, " outside [0, ", C, ")"));
    if (p < 0 || p >= C) {
      ++r.unparsable;
      ++fn[t];
      continue;
    }
    r.confusion[t][p]++;
    if (p == t)
      ++right, ++tp[t];
    else
      ++fp[p], ++fn[t];
  }
  r.accuracy = r.n ? static_cast<double>(right) / r.n : 0.0;
  double f1sum = 0, weighted = 0;
  int present = 0;
  for (int c = 0; c < C; ++c) {
    // zero_division = 0: a precision with no prediction of c, a recall with no image of c
    double rec = tp[c] + fn[c] ? static_cast<double>(tp[c]) / (tp[c] + fn[c]) : 0.0;
    double pre = tp[c] + fp[c] ? static_cast<double>(tp[c]) / (tp[c] + fp[c]) : 0.0;
    double f = pre + rec > 0 ? 2 * pre * rec / (pre + rec) : 0.0;
    r.recall.push_back(rec);
    r.precision.push_back(pre);
    r.f1.push_back(f);
    r.support.push_back(tp[c] + fn[c]);
    r.present.push_back(tp[c] + fn[c] + fp[c] > 0);
    if (r.present.back()) f1sum += f, ++present;
    weighted += f * static_cast<double>(tp[c] + fn[c]);
  }
  r.macro_f1 = present ? f1sum / present : 0.0;
  r.weighted_f1 = r.n ? weighted / r.n : 0.0;
  return r;
}

json ClassificationReport::to_json(const std::vector<std::string>& labels) const {
  json j = {{"n", n},
            {"accuracy", accuracy},
            {"macro_f1", macro_f1},
            {"weighted_f1", weighted_f1},
            {"unparsable", unparsable},
            {"confusion", confusion},
            {"labels", labels}};
  for (size_t c = 0; c < labels.size() && c < recall.size(); ++c)
    j["per_class"][labels[c]] = {
        {"recall", recall[c]}, {"precision", precision[c]}, {"f1", f1[c]}, {"support", support[c]}};
  return j;
}

Complementarity complementarity(const std::vector<int>& a, const std::vector<int>& b,
                                const std::vector<int>& truth) {
  if (a.size() != truth.size() || b.size() != truth.size())
    throw Error(cat("complementarity: ", a.size(), " and ", b.size(), " predictions for ",
                    truth.size(), " labels"));
  Complementarity c;
  for (size_t i = 0; i < truth.size(); ++i) {
    const bool ra = a[i] == truth[i], rb = b[i] == truth[i];
    if (ra && rb)
      ++c.both_right;
    else if (ra)
      ++c.only_a;
    else if (rb)
      ++c.only_b;
    else
      ++c.both_wrong;
  }
  return c;
}

json Complementarity::to_json(const std::string& a, const std::string& b) const {
  const double n = static_cast<double>(both_right + only_a + only_b + both_wrong);
  auto pct = [&](int64_t v) { return n > 0 ? 100.0 * v / n : 0.0; };
  return {{"both_right", both_right},
          {"only_" + a, only_a},
          {"only_" + b, only_b},
          {"both_wrong", both_wrong},
          {"percent",
           {{"both_right", pct(both_right)},
            {"only_" + a, pct(only_a)},
            {"only_" + b, pct(only_b)},
            {"both_wrong", pct(both_wrong)}}}};
}

namespace {

// The percentile interval of a sample of statistics: the (1 - level) / 2 and (1 + level) / 2
// quantiles, linearly interpolated between order statistics (numpy's default).
Interval percentile_interval(std::vector<double> v, double level) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  auto q = [&](double p) {
    const double pos = p * static_cast<double>(v.size() - 1);
    const size_t i = static_cast<size_t>(std::floor(pos));
    const double f = pos - static_cast<double>(i);
    return i + 1 < v.size() ? v[i] + f * (v[i + 1] - v[i]) : v[i];
  };
  return {q((1 - level) / 2), q((1 + level) / 2)};
}

void check_bootstrap(int64_t resamples, double level) {
  check(resamples >= 1, cat("bootstrap: resamples must be positive, not ", resamples));
  check(level > 0 && level < 1,
        cat("bootstrap: the confidence level must be in (0, 1), not ", level));
}

// The image indices of one resample.
std::vector<size_t> resample(SplitMix64& rng, size_t n) {
  std::vector<size_t> idx(n);
  for (auto& i : idx) i = static_cast<size_t>(rng.below(n));
  return idx;
}

}  // namespace

BootstrapIntervals bootstrap_intervals(const std::vector<int>& pred, const std::vector<int>& truth,
                                       int C, int64_t resamples, uint64_t seed, double level) {
  check_bootstrap(resamples, level);
  if (pred.size() != truth.size())
    throw Error(cat("bootstrap: ", pred.size(), " predictions for ", truth.size(), " labels"));
  BootstrapIntervals out;
  if (truth.empty()) return out;
  SplitMix64 rng(seed);
  std::vector<double> acc, macro;
  std::vector<std::vector<double>> f1(static_cast<size_t>(C));
  std::vector<int> p(truth.size()), t(truth.size());
  for (int64_t r = 0; r < resamples; ++r) {
    const std::vector<size_t> idx = resample(rng, truth.size());
    for (size_t i = 0; i < idx.size(); ++i) p[i] = pred[idx[i]], t[i] = truth[idx[i]];
    const ClassificationReport rep = classification_report(p, t, C);
    acc.push_back(rep.accuracy);
    macro.push_back(rep.macro_f1);
    for (int c = 0; c < C; ++c) f1[c].push_back(rep.f1[c]);
  }
  out.accuracy = percentile_interval(acc, level);
  out.macro_f1 = percentile_interval(macro, level);
  for (int c = 0; c < C; ++c) out.f1.push_back(percentile_interval(f1[c], level));
  return out;
}

Interval bootstrap_mean(const std::vector<int>& right, int64_t resamples, uint64_t seed,
                        double level) {
  check_bootstrap(resamples, level);
  if (right.empty()) return {};
  SplitMix64 rng(seed);
  std::vector<double> means;
  for (int64_t r = 0; r < resamples; ++r) {
    int64_t sum = 0;
    for (size_t i : resample(rng, right.size())) sum += right[i] != 0;
    means.push_back(static_cast<double>(sum) / static_cast<double>(right.size()));
  }
  return percentile_interval(means, level);
}

Interval bootstrap_accuracy_difference(const std::vector<int>& a, const std::vector<int>& b,
                                       const std::vector<int>& truth, int64_t resamples,
                                       uint64_t seed, double level) {
  if (a.size() != truth.size() || b.size() != truth.size())
    throw Error(cat("bootstrap: ", a.size(), " and ", b.size(), " predictions for ", truth.size(),
                    " labels"));
  // each resample: the mean over its images of (a right) - (b right), both on the same images
  check_bootstrap(resamples, level);
  if (truth.empty()) return {};
  SplitMix64 rng(seed);
  std::vector<double> diffs;
  for (int64_t r = 0; r < resamples; ++r) {
    int64_t d = 0;
    for (size_t i : resample(rng, truth.size())) d += (a[i] == truth[i]) - (b[i] == truth[i]);
    diffs.push_back(static_cast<double>(d) / static_cast<double>(truth.size()));
  }
  return percentile_interval(diffs, level);
}

double mcnemar_exact_p(int64_t b, int64_t c) {
  check(b >= 0 && c >= 0, cat("McNemar: counts must be non-negative, not ", b, " and ", c));
  const int64_t n = b + c, k = std::min(b, c);
  if (n == 0) return 1.0;
  // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (n may be thousands)
  const double log_half_n = -static_cast<double>(n) * std::log(2.0);
  double tail = 0;
  for (int64_t i = 0; i <= k; ++i)
    tail += std::exp(std::lgamma(n + 1.0) - std::lgamma(i + 1.0) - std::lgamma(n - i + 1.0) +
                     log_half_n);
  return std::min(1.0, 2 * tail);
}

std::string markdown_table(const std::vector<std::string>& header,
                           const std::vector<std::vector<std::string>>& rows) {
  std::string s = "|";
  for (const auto& h : header) s += " " + h + " |";
  s += "\n|";
  for (size_t i = 0; i < header.size(); ++i) s += "---|";
  s += "\n";
  for (const auto& r : rows) {
    s += "|";
    for (const auto& c : r) s += " " + c + " |";
    s += "\n";
  }
  return s;
}

}  // namespace emovlm
