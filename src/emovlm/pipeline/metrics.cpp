// Classification metrics.
#include "emovlm/pipeline/metrics.h"

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"

namespace emovlm {

using json = nlohmann::json;

ClassificationReport classification_report(const std::vector<int>& pred, const std::vector<int>& truth, int C) {
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
    if (p == t) ++right, ++tp[t];
    else ++fp[p], ++fn[t];
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
  json j = {{"n", n}, {"accuracy", accuracy}, {"macro_f1", macro_f1}, {"weighted_f1", weighted_f1},
            {"unparsable", unparsable}, {"confusion", confusion}, {"labels", labels}};
  for (size_t c = 0; c < labels.size() && c < recall.size(); ++c)
    j["per_class"][labels[c]] = {{"recall", recall[c]}, {"precision", precision[c]}, {"f1", f1[c]}, {"support", support[c]}};
  return j;
}

Complementarity complementarity(const std::vector<int>& a, const std::vector<int>& b, const std::vector<int>& truth) {
  if (a.size() != truth.size() || b.size() != truth.size())
    throw Error(cat("complementarity: ", a.size(), " and ", b.size(), " predictions for ", truth.size(), " labels"));
  Complementarity c;
  for (size_t i = 0; i < truth.size(); ++i) {
    const bool ra = a[i] == truth[i], rb = b[i] == truth[i];
    if (ra && rb) ++c.both_right;
    else if (ra) ++c.only_a;
    else if (rb) ++c.only_b;
    else ++c.both_wrong;
  }
  return c;
}

json Complementarity::to_json(const std::string& a, const std::string& b) const {
  const double n = static_cast<double>(both_right + only_a + only_b + both_wrong);
  auto pct = [&](int64_t v) { return n > 0 ? 100.0 * v / n : 0.0; };
  return {{"both_right", both_right}, {"only_" + a, only_a}, {"only_" + b, only_b}, {"both_wrong", both_wrong},
          {"percent", {{"both_right", pct(both_right)}, {"only_" + a, pct(only_a)}, {"only_" + b, pct(only_b)},
                       {"both_wrong", pct(both_wrong)}}}};
}

std::string markdown_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
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
