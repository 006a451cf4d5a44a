// A labelled split through a model, journaled (see split_eval.h).
#include "emovlm/pipeline/split_eval.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/core/paths.h"

namespace emovlm {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The results a journal holds, by the identity of their image (however its path was spelled); a
// last line cut short by a kill is dropped (and cut from the file, so that appending goes on from a
// whole line).
std::map<std::string, json> read_journal(const std::string& path, const json& settings) {
  std::map<std::string, json> rows;
  if (!file_exists(path)) return rows;
  const std::string text = read_file(path);
  size_t pos = 0, good_end = 0, line_no = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // no newline: cut short
    json j = json::parse(text.substr(pos, nl - pos), nullptr, false);
    if (j.is_discarded() || !j.is_object())
      throw Error(cat(path, ": line ", line_no + 1, " is not a JSON object (delete the file to start over)"));
    if (line_no == 0) {
      const std::string d = json_first_difference(j, settings);
      if (!d.empty())
        throw Error(cat(path, ": written with other settings (", d, "): delete it or write the report elsewhere"));
    } else {
      if (!j.contains("image") || !j["image"].is_string())
        throw Error(cat(path, ": line ", line_no + 1, " has no image (delete the file to start over)"));
      const std::string image = resolve_stored_path(j["image"].get<std::string>(), path);
      j["image"] = image;
      rows[path_identity(image)] = std::move(j);
    }
    ++line_no;
    pos = good_end = nl + 1;
  }
  if (good_end < text.size()) fs::resize_file(path, good_end);
  return rows;
}

}  // namespace

SplitRun run_split(const std::string& data, const std::string& split, DatasetOptions dataset, const std::string& labels,
                   const json& settings, const ImageRunner& run, const std::function<void(const json&)>& on_result,
                   const std::string& journal) {
  dataset.labels = labels;
  const Dataset ds = load_dataset(data, dataset);
  SplitRun r;
  r.labels = ds.labels;
  r.samples = ds.split(split);
  const std::vector<std::string>& L = r.labels.labels;
  std::unique_ptr<OutputLock> lock;
  if (!journal.empty()) lock = std::make_unique<OutputLock>(journal, OutputLock::Kind::File);

  std::map<std::string, json> done = journal.empty() ? std::map<std::string, json>() : read_journal(journal, settings);
  std::ofstream log;
  if (!journal.empty()) {
    const bool fresh = !file_exists(journal) || fs::file_size(journal) == 0;
    log.open(journal, std::ios::app);
    if (!log) throw Error(cat(journal, ": cannot open for appending"));
    if (fresh) log << settings.dump() << '\n' << std::flush;
  }
  std::vector<std::string> keys, todo;
  std::vector<int> todo_label;
  for (const Sample& s : r.samples) {
    keys.push_back(path_identity(s.path));
    if (!done.count(keys.back())) todo.push_back(s.path), todo_label.push_back(s.label);
  }
  r.resumed = static_cast<int64_t>(r.samples.size() - todo.size());
  size_t k = 0;
  run(todo, [&](const json& result) {
    if (k >= todo.size()) throw Error("run_split: the model gave more results than there were images");
    json row = result;
    row["truth"] = L[todo_label[k++]];
    if (log.is_open()) {
      json stored = row;
      stored["image"] = store_path(row.at("image").get<std::string>(), journal);
      log << stored.dump() << '\n' << std::flush;
      if (!log) throw Error(cat(journal, ": write failed"));
    }
    done[path_identity(row.at("image").get<std::string>())] = row;
    if (on_result) on_result(row);
  });
  std::vector<std::string> unreadable;
  for (size_t i = 0; i < r.samples.size(); ++i) {
    auto it = done.find(keys[i]);
    if (it == done.end()) throw Error(cat("run_split: no result for ", r.samples[i].path));
    json row = it->second;
    row["image"] = r.samples[i].path;
    row["truth"] = L[r.samples[i].label];  // the dataset's label now, not the journal's
    if (row.contains("error")) unreadable.push_back(row["error"].is_string() ? row["error"].get<std::string>() : r.samples[i].path);
    r.rows.push_back(std::move(row));
  }
  check_readable(cat("the ", split, " split"), data, r.samples.size(), unreadable);
  return r;
}

SplitPredictions split_predictions(const SplitRun& r, const std::function<json(const json&)>& label_of) {
  const std::vector<std::string>& L = r.labels.labels;
  SplitPredictions p;
  for (size_t i = 0; i < r.rows.size(); ++i) {
    if (r.rows[i].contains("error")) continue;
    const json label = label_of(r.rows[i]);
    const auto it = label.is_string() ? std::find(L.begin(), L.end(), label.get<std::string>()) : L.end();
    p.pred.push_back(it == L.end() ? -1 : static_cast<int>(it - L.begin()));
    p.truth.push_back(r.samples[i].label);
  }
  return p;
}

json split_unreadable(const SplitRun& r) {
  json out = json::array();
  for (size_t i = 0; i < r.rows.size(); ++i)
    if (r.rows[i].contains("error")) out.push_back({{"image", r.samples[i].path}, {"error", r.rows[i]["error"]}});
  return out;
}

json split_report_for_file(json report, const std::string& report_path) {
  if (report.contains("data") && report["data"].is_string())
    report["data"] = store_path(report["data"].get<std::string>(), report_path);
  for (const char* list : {"predictions", "unreadable_images"})
    if (report.contains(list))
      for (auto& e : report[list])
        if (e.contains("image") && e["image"].is_string()) e["image"] = store_path(e["image"].get<std::string>(), report_path);
  return report;
}

}  // namespace emovlm
