// classify --data and predict --data: a labelled split with a progress bar, resumable with --out,
// and the metrics printed.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/progress.h"
#include "emovlm/dist/process_group.h"
#include "emovlm/pipeline/split_eval.h"

namespace emovlm::cli {

using json = nlohmann::json;

bool SplitArgs::chosen(const std::vector<std::string>& images, const std::string& command) const {
  if (images.empty() == data.empty())
    throw Error(cat(command, ": give image files or directories, or --data (not both)"));
  return !data.empty();
}

void add_split_flags(CLI::App* cmd, SplitArgs& a, const std::string& what) {
  add_data_flag(
      cmd, a.data,
      cat("a labelled dataset (ROOT or MANIFEST) instead of images: ", what, " (default: none)"),
      false);
  add_split_flag(cmd, a.split, "--data: ");
  add_dataset_flags(cmd, a.dataset, "--data: ", false);
  add_out_flag(cmd, a.out,
               "--data: write the report (metrics, each image's prediction) to this JSON file; "
               "OUT.partial.jsonl keeps the results so far, and a run killed before the end "
               "resumes from it (default: print only)",
               false);
}

namespace {

// The report's models in the order of the paper's tables, with the names they have there.
const std::vector<std::pair<std::string, std::string>> kModelNames = {
    {"vlm", "VLM"}, {"teacher", "teacher"}, {"distill_head", "head"}, {"emovlm_kd", "EmoVLM-KD"}};

void print_metrics(const json& report) {
  std::printf("%s, split %s: %lld images\n", report["data"].get<std::string>().c_str(),
              report["split"].get<std::string>().c_str(),
              static_cast<long long>(report["images"].get<int64_t>()));
  // the known models in the paper's order, then any other the report has, under its key
  std::vector<std::pair<std::string, std::string>> shown;
  for (const auto& [key, name] : kModelNames)
    if (report["models"].contains(key)) shown.emplace_back(key, name);
  for (const auto& [key, value] : report["models"].items())
    if (std::none_of(kModelNames.begin(), kModelNames.end(),
                     [&](const auto& k) { return k.first == key; }))
      shown.emplace_back(key, key);
  for (const auto& [key, name] : shown) {
    const json& m = report["models"][key];
    std::printf("%-12s accuracy %6.2f%%, macro-F1 %6.2f%%", name.c_str(),
                100 * m["accuracy"].get<double>(), 100 * m["macro_f1"].get<double>());
    if (m["unparsable"].get<int64_t>() > 0)
      std::printf(", %lld unparsable", static_cast<long long>(m["unparsable"].get<int64_t>()));
    std::printf("\n  recall:");
    for (const auto& l : m["labels"]) {
      const std::string label = l.get<std::string>();
      std::printf(" %s %.1f%%", label.c_str(), 100 * m["per_class"][label]["recall"].get<double>());
    }
    std::printf("\n");
  }
  if (report["unreadable"].get<int64_t>() > 0)
    std::printf("%s (left out of the metrics; listed in the JSON report)\n",
                cat(report["unreadable"].get<int64_t>(), " of ", report["images"].get<int64_t>(),
                    " images could not be read")
                    .c_str());
}

}  // namespace

void run_split_report(const SplitArgs& a, bool as_json, const SplitEvaluation& evaluate) {
  // with --out, each result also goes to OUT.partial.jsonl as it comes: a killed run resumes from
  // it
  const std::string journal = a.out.empty() ? "" : a.out + ".partial.jsonl";
  Progress bar(cat("evaluate ", a.split), -1, "img");
  json report = evaluate([&](const json&) { bar.advance(); }, journal);
  bar.finish();
  if (!a.out.empty() &&
      dist::is_main()) {  // data parallel: every rank has the report; rank 0 writes it
    write_file_atomic(a.out, split_report_for_file(report, a.out).dump(1) + "\n");
    std::remove(journal.c_str());
  }
  if (report["resumed"].get<int64_t>() > 0)
    std::fprintf(stderr, "resumed: %lld results from %s\n",
                 static_cast<long long>(report["resumed"].get<int64_t>()), journal.c_str());
  if (as_json)
    std::cout << report.dump(1) << std::endl;
  else
    print_metrics(report);
}

}  // namespace emovlm::cli
