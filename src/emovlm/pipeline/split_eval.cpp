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
#include "emovlm/dist/process_group.h"

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
      throw Error(cat(path, ": line ", line_no + 1,
                      " is not a JSON object (delete the file to start over)"));
    if (line_no == 0) {
      const std::string d = json_first_difference(j, settings);
      if (!d.empty())
        throw Error(cat(path, ": written with other settings (", d,
                        "): delete it or write the report elsewhere"));
    } else {
      if (!j.contains("image") || !j["image"].is_string())
        throw Error(
            cat(path, ": line ", line_no + 1, " has no image (delete the file to start over)"));
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

SplitRun run_split(const std::string& data, const std::string& split, DatasetOptions dataset,
                   const std::string& labels, const json& settings, const ImageRunner& run,
                   const std::function<void(const json&)>& on_result, const std::string& journal) {
  dataset.labels = labels;
  const Dataset ds = load_dataset(data, dataset);
  SplitRun r;
  r.labels = ds.labels;
  r.samples = ds.split(split);
  const std::vector<std::string>& L = r.labels.labels;
  // Data parallel (torchrun, Slurm): rank 0 owns the journal and decides what remains; the ranks
  // label consecutive chunks of it in turn and every rank receives every result, in order.
  std::unique_ptr<OutputLock> lock;
  std::map<std::string, json> done;
  std::ofstream log;
  std::vector<std::string> keys;
  for (const Sample& s : r.samples) keys.push_back(path_identity(s.path));
  const json todo_index = json::parse(dist::from_main([&] {
    if (!journal.empty()) {
      lock = std::make_unique<OutputLock>(journal, OutputLock::Kind::File);
      done = read_journal(journal, settings);
      const bool fresh = !file_exists(journal) || fs::file_size(journal) == 0;
      log.open(journal, std::ios::app);
      if (!log) throw Error(cat(journal, ": cannot open for appending"));
      if (fresh) log << settings.dump() << '\n' << std::flush;
    }
    // what remains (sample indices), and the journal's rows for the ranks that have no journal
    json todo = json::array(), resumed = json::array();
    for (size_t i = 0; i < r.samples.size(); ++i) {
      auto it = done.find(keys[i]);
      if (it == done.end())
        todo.push_back(i);
      else if (dist::active())
        resumed.push_back({i, it->second});
    }
    return json({{"todo", todo}, {"resumed", resumed}}).dump();
  }));
  if (!dist::is_main())
    for (const auto& e : todo_index["resumed"]) done[keys[e[0].get<size_t>()]] = e[1];
  std::vector<size_t> todo_sample;
  std::vector<std::string> todo;
  for (const auto& i : todo_index["todo"]) {
    todo_sample.push_back(i.get<size_t>());
    todo.push_back(r.samples[todo_sample.back()].path);
  }
  r.resumed = static_cast<int64_t>(r.samples.size() - todo.size());
  size_t k = 0;
  auto record = [&](const json& result) {
    if (k >= todo.size())
      throw Error("run_split: the model gave more results than there were images");
    const Sample& sample = r.samples[todo_sample[k++]];
    json row = result;
    row["image"] = sample.path;  // this process's spelling (a result may come from another machine)
    row["truth"] = L[sample.label];
    if (log.is_open()) {
      json stored = row;
      stored["image"] = store_path(sample.path, journal);
      log << stored.dump() << '\n' << std::flush;
      if (!log) throw Error(cat(journal, ": write failed"));
    }
    done[path_identity(sample.path)] = row;
    if (on_result) on_result(row);
  };
  if (!dist::active()) {
    run(todo, record);
  } else {
    constexpr size_t kChunk = 16;  // images a rank labels between two exchanges
    const size_t world = static_cast<size_t>(dist::world_size()),
                 me = static_cast<size_t>(dist::rank());
    for (size_t round = 0; round < todo.size(); round += kChunk * world) {
      const size_t begin = std::min(todo.size(), round + me * kChunk),
                   end = std::min(todo.size(), begin + kChunk);
      json mine = json::array();
      if (begin < end)
        run(std::vector<std::string>(todo.begin() + static_cast<std::ptrdiff_t>(begin),
                                     todo.begin() + static_cast<std::ptrdiff_t>(end)),
            [&](const json& result) { mine.push_back(result); });
      if (mine.size() != end - begin)
        throw Error(cat("run_split: the model gave ", mine.size(), " results for ", end - begin,
                        " images"));
      for (const std::string& part : dist::all_gather_bytes(mine.dump()))
        for (const auto& result : json::parse(part)) record(result);
    }
  }
  std::vector<std::string> unreadable;
  for (size_t i = 0; i < r.samples.size(); ++i) {
    auto it = done.find(keys[i]);
    if (it == done.end()) throw Error(cat("run_split: no result for ", r.samples[i].path));
    json row = it->second;
    row["image"] = r.samples[i].path;
    row["truth"] = L[r.samples[i].label];  // the dataset's label now, not the journal's
    if (row.contains("error"))
      unreadable.push_back(row["error"].is_string() ? row["error"].get<std::string>()
                                                    : r.samples[i].path);
    r.rows.push_back(std::move(row));
  }
  check_readable(cat("the ", split, " split"), data, r.samples.size(), unreadable);
  return r;
}

SplitPredictions split_predictions(const SplitRun& r,
                                   const std::function<json(const json&)>& label_of) {
  const std::vector<std::string>& L = r.labels.labels;
  SplitPredictions p;
  for (size_t i = 0; i < r.rows.size(); ++i) {
    if (r.rows[i].contains("error")) continue;
    const json label = label_of(r.rows[i]);
    const auto it =
        label.is_string() ? std::find(L.begin(), L.end(), label.get<std::string>()) : L.end();
    p.pred.push_back(it == L.end() ? -1 : static_cast<int>(it - L.begin()));
    p.truth.push_back(r.samples[i].label);
  }
  return p;
}

json split_unreadable(const SplitRun& r) {
  json out = json::array();
  for (size_t i = 0; i < r.rows.size(); ++i)
    if (r.rows[i].contains("error"))
      out.push_back({{"image", r.samples[i].path}, {"error", r.rows[i]["error"]}});
  return out;
}

json split_report_for_file(json report, const std::string& report_path) {
  if (report.contains("data") && report["data"].is_string())
    report["data"] = store_path(report["data"].get<std::string>(), report_path);
  for (const char* list : {"predictions", "unreadable_images"})
    if (report.contains(list))
      for (auto& e : report[list])
        if (e.contains("image") && e["image"].is_string())
          e["image"] = store_path(e["image"].get<std::string>(), report_path);
  return report;
}

}  // namespace emovlm
