// Dataset checks: content hashes for duplicates, optional decoding, on worker threads.
#include "emovlm/data/check.h"

#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/progress.h"
#include "emovlm/data/loader.h"
#include "emovlm/image/image.h"

namespace emovlm {

using json = nlohmann::json;

namespace {

struct Item {
  const Sample* sample;
  std::string split;
  uint64_t hash = 0;
  bool hashed = false;  // the file could be read
  std::string error;    // unreadable file or image
  int width = 0, height = 0;
};

json stats(std::vector<int> v) {
  if (v.empty()) return json::object();
  std::sort(v.begin(), v.end());
  return {{"min", v.front()}, {"median", v[v.size() / 2]}, {"max", v.back()}};
}

}  // namespace

json check_dataset(const CheckOptions& o) {
  const Dataset d = load_dataset(o.data, o.dataset);
  std::vector<Item> items;
  for (const auto& [name, split] :
       {std::pair<std::string, const std::vector<Sample>*>{"train", &d.train},
        {"val", &d.val},
        {"test", &d.test}})
    for (const auto& s : *split) items.push_back({&s, name});

  // hash (and decode) on worker threads; results in order
  auto examine = [&](size_t i) {
    Item it = items[i];
    try {
      MappedFile f(it.sample->path);
      it.hash = fnv1a64(f.data(), f.size());  // = hash_file()
      it.hashed = true;
      if (o.decode) {
        RgbImage img = decode_image_memory(f.data(), f.size(), it.sample->path);
        it.width = img.width;
        it.height = img.height;
      }
    } catch (const std::exception& e) {
      it.error = e.what();
    }
    return it;
  };
  const int n_threads = o.threads > 0
                            ? o.threads
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  OrderedPrefetcher<Item> results(items.size(), examine, n_threads,
                                  4 * static_cast<size_t>(n_threads));
  Progress bar("data check", static_cast<int64_t>(items.size()), "images");
  for (size_t i = 0; i < items.size(); ++i) {
    results.next(items[i]);
    bar.advance();
  }
  bar.finish();

  json rep = {{"data", o.data}, {"summary", d.summary()}, {"decoded", o.decode}};
  json unreadable = json::array();
  std::map<uint64_t, std::vector<const Item*>> by_hash;
  std::vector<int> widths, heights;
  for (const auto& it : items) {
    if (!it.error.empty()) {
      unreadable.push_back({{"path", it.sample->path}, {"split", it.split}, {"error", it.error}});
      if (!it.hashed) continue;  // the file itself could not be read
    }
    by_hash[it.hash].push_back(&it);
    if (it.width > 0) widths.push_back(it.width), heights.push_back(it.height);
  }
  json dups = json::array();
  int64_t cross = 0, conflicting = 0, extra_copies = 0;
  for (const auto& [h, group] : by_hash) {
    if (group.size() < 2) continue;
    std::set<std::string> splits, labels;
    json paths = json::array();
    for (const Item* it : group) {
      splits.insert(it->split);
      labels.insert(d.labels.labels[it->sample->label]);
      paths.push_back({{"path", it->sample->path},
                       {"split", it->split},
                       {"label", d.labels.labels[it->sample->label]}});
    }
    const bool across = splits.size() > 1, conflict = labels.size() > 1;
    cross += across;
    conflicting += conflict;
    extra_copies += static_cast<int64_t>(group.size()) - 1;
    dups.push_back({{"content_hash", hex64(h)},
                    {"copies", paths},
                    {"across_splits", across},
                    {"conflicting_labels", conflict}});
  }
  rep["duplicate_groups"] = dups.size();
  rep["duplicate_extra_copies"] = extra_copies;
  rep["cross_split_duplicates"] = cross;
  rep["conflicting_labels"] = conflicting;
  rep["duplicates"] = dups;
  rep["unreadable"] = unreadable;
  if (o.decode) rep["sizes"] = {{"width", stats(widths)}, {"height", stats(heights)}};
  if (!o.out.empty()) {  // the paths as the report file stores them (relative to its folder)
    json stored = rep;
    stored["data"] = store_path(o.data, o.out);
    for (auto& u : stored["unreadable"])
      u["path"] = store_path(u["path"].get<std::string>(), o.out);
    for (auto& g : stored["duplicates"])
      for (auto& c : g["copies"]) c["path"] = store_path(c["path"].get<std::string>(), o.out);
    make_dirs(parent_folder(o.out));
    write_file_atomic(o.out, stored.dump(1) + "\n");
  }
  std::vector<std::string> errors;
  for (const auto& u : unreadable) errors.push_back(u["error"].get<std::string>());
  check_readable("the dataset", o.data, items.size(),
                 errors);  // after the report: it lists them all
  return rep;
}

}  // namespace emovlm
