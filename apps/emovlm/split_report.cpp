// classify --data and predict --data: a labelled split with a progress bar, resumable with --out,
// and the metrics printed.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/progress.h"

namespace emovlm::cli {

using json = nlohmann::json;

json run_split_report(const std::string& split, const std::string& out, const SplitEvaluation& evaluate) {
  // with --out, each result also goes to OUT.partial.jsonl as it comes: a killed run resumes from it
  const std::string journal = out.empty() ? "" : out + ".partial.jsonl";
  Progress bar(cat("evaluate ", split), -1, "img");
  json report = evaluate([&](const json&) { bar.advance(); }, journal);
  bar.finish();
  if (!out.empty()) {
    write_file_atomic(out, report.dump(1) + "\n");
    std::remove(journal.c_str());
  }
  if (report["resumed"].get<int64_t>() > 0)
    std::fprintf(stderr, "resumed: %lld results from %s\n", static_cast<long long>(report["resumed"].get<int64_t>()),
                 journal.c_str());
  return report;
}

void print_split_report(const json& report, const std::vector<std::pair<std::string, json>>& models) {
  std::printf("%s, split %s: %lld images\n", report["data"].get<std::string>().c_str(),
              report["split"].get<std::string>().c_str(), static_cast<long long>(report["images"].get<int64_t>()));
  for (const auto& [name, m] : models) {
    std::printf("%-12s accuracy %6.2f%%, macro-F1 %6.2f%%", name.c_str(), 100 * m["accuracy"].get<double>(),
                100 * m["macro_f1"].get<double>());
    if (m["unparsable"].get<int64_t>() > 0) std::printf(", %lld unparsable", static_cast<long long>(m["unparsable"].get<int64_t>()));
    std::printf("\n  recall:");
    for (const auto& l : m["labels"]) {
      const std::string label = l.get<std::string>();
      std::printf(" %s %.1f%%", label.c_str(), 100 * m["per_class"][label]["recall"].get<double>());
    }
    std::printf("\n");
  }
  if (report["unreadable"].get<int64_t>() > 0)
    std::printf("%s (left out of the metrics; listed in the JSON report)\n",
                cat(report["unreadable"].get<int64_t>(), " of ", report["images"].get<int64_t>(), " images could not be read")
                    .c_str());
}

}  // namespace emovlm::cli
