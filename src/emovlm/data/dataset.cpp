// Dataset loading (folders and manifests) and the deterministic stratified split.
#include "emovlm/data/dataset.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/paths.h"

namespace emovlm {

namespace fs = std::filesystem;

uint64_t SplitMix64::next() {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
double SplitMix64::uniform() {
  return (next() >> 11) * (1.0 / 9007199254740992.0);
}
uint64_t SplitMix64::below(uint64_t n) {
  return n ? next() % n : 0;
}
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) {
  SplitMix64 r(a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull) ^
               (c * 0xD6E8FEB86659FD93ull));
  return r.next();
}

bool is_image_file(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // the formats decode_image_file reads, and the ones it reports as unsupported (so that such a
  // file shows up in the skipped-images report instead of vanishing from the split)
  for (const char* e : {".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
    if (ext == e) return true;
  return false;
}

std::vector<std::string> list_image_files(const std::string& dir) {
  std::vector<std::string> out;
  std::set<std::pair<dev_t, ino_t>> seen;
  std::vector<fs::path> todo = {fs::path(dir)};
  while (!todo.empty()) {
    const fs::path d = todo.back();
    todo.pop_back();
    struct stat st;
    if (::stat(d.c_str(), &st) != 0 || !seen.insert({st.st_dev, st.st_ino}).second) continue;
    std::error_code ec;
    for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
      const fs::path p = it->path();
      std::error_code sec;
      const fs::file_status s =
          fs::status(p, sec);  // follows links; a loop or dangling link: an error
      if (!sec && fs::is_directory(s))
        todo.push_back(p);
      else if (is_image_file(p.string()))
        out.push_back(p.string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> unreadable_by_stat(const std::vector<Sample>& samples) {
  std::vector<std::string> out;
  for (const auto& s : samples) {
    struct stat st;
    if (::stat(s.path.c_str(), &st) != 0)
      out.push_back(cat(s.path, ": ", std::strerror(errno)));
    else if (!S_ISREG(st.st_mode))
      out.push_back(cat(s.path, ": not a regular file"));
  }
  return out;
}

void check_readable(const std::string& what, const std::string& source, size_t total,
                    const std::vector<std::string>& errors, bool quiet) {
  if (errors.empty()) return;
  auto first = [&](size_t n) {
    std::string s;
    for (size_t i = 0; i < std::min(n, errors.size()); ++i) s += cat(i ? "; " : "", errors[i]);
    return s;
  };
  if (errors.size() >= total)
    throw Error(cat(source, ": none of the ", total, " images of ", what, " could be read (",
                    first(3), ")"));
  if (!quiet && errors.size() * 100 > total)
    std::fprintf(
        stderr, "warning: %s: %zu of %zu images of %s could not be read (%.1f%%), e.g. %s\n",
        source.c_str(), errors.size(), total, what.c_str(),
        100.0 * static_cast<double>(errors.size()) / static_cast<double>(total), first(1).c_str());
}

const std::vector<Sample>& Dataset::split(const std::string& name) const {
  const std::vector<Sample>* s = name == "train"  ? &train
                                 : name == "val"  ? &val
                                 : name == "test" ? &test
                                                  : nullptr;
  if (!s) throw Error(cat("unknown split '", name, "' (train, val, test)"));
  if (s->empty()) throw Error(cat(source, ": the ", name, " split has no images"));
  return *s;
}

json Dataset::summary() const {
  json j = {{"source", source},
            {"labels", labels.labels},
            {"label_set", labels.name},
            {"val_origin", val_origin},
            {"test_origin", test_origin}};
  for (const auto& [name, s] : {std::pair<std::string, const std::vector<Sample>*>{"train", &train},
                                {"val", &val},
                                {"test", &test}}) {
    std::vector<int64_t> counts(labels.labels.size(), 0);
    for (const auto& x : *s) counts[x.label]++;
    j["splits"][name] = {{"images", s->size()}, {"per_class", counts}};
  }
  return j;
}

std::pair<std::vector<Sample>, std::vector<Sample>> stratified_split(
    const std::vector<Sample>& samples, double fraction, uint64_t seed) {
  std::map<int, std::vector<Sample>> by_class;
  for (const auto& s : samples) by_class[s.label].push_back(s);
  std::vector<Sample> keep, held;
  for (auto& [label, v] : by_class) {
    std::sort(v.begin(), v.end(), [](const Sample& a, const Sample& b) { return a.path < b.path; });
    SplitMix64 rng(mix_seed(seed, static_cast<uint64_t>(label)));
    shuffle_in_place(v, rng);
    size_t n_held = static_cast<size_t>(std::llround(fraction * static_cast<double>(v.size())));
    if (fraction > 0 && n_held == 0 && v.size() >= 2) n_held = 1;
    if (n_held >= v.size()) n_held = v.size() - 1;
    for (size_t i = 0; i < v.size(); ++i) (i < n_held ? held : keep).push_back(v[i]);
  }
  auto by_path = [](const Sample& a, const Sample& b) { return a.path < b.path; };
  std::sort(keep.begin(), keep.end(), by_path);
  std::sort(held.begin(), held.end(), by_path);
  return {keep, held};
}

namespace {

std::vector<std::string> sorted_subdirs(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::error_code ec;
    if (e.is_directory(ec)) out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<Sample> scan_split(const fs::path& dir, const LabelSet& labels) {
  std::vector<Sample> out;
  for (const auto& cls : sorted_subdirs(dir)) {
    int idx = labels.index_of(cls);
    if (idx < 0)
      throw Error(
          cat((dir / cls).string(), ": folder '", cls, "' is not a label of ", labels.name));
    std::vector<std::string> files;
    // every image-named entry but directories: one that cannot be read (a FIFO, a dangling link, a
    // link loop) is listed, and reported as unreadable by the command that reads it
    for (const auto& e : fs::directory_iterator(dir / cls)) {
      std::error_code ec;
      if (!e.is_directory(ec) && is_image_file(e.path().string()))
        files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    for (auto& f : files) out.push_back({f, idx, {}});
  }
  return out;
}

void check_classes(const std::vector<Sample>& s, const LabelSet& labels, const std::string& where) {
  std::vector<int> n(labels.labels.size(), 0);
  for (const auto& x : s) n[x.label]++;
  for (size_t i = 0; i < n.size(); ++i)
    if (n[i] == 0) throw Error(cat(where, ": class '", labels.labels[i], "' has no images"));
}

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"')
        cur += '"', ++i;
      else if (c == '"')
        quoted = false;
      else
        cur += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else if (c != '\r') {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

struct Row {
  std::string path, label, split;
  std::map<std::string, float> soft;
};

std::vector<Row> read_manifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(cat(path, ": cannot open"));
  std::vector<Row> rows;
  const bool jsonl =
      fs::path(path).extension() == ".jsonl" || fs::path(path).extension() == ".json";
  std::string line;
  size_t lineno = 0;
  std::vector<std::string> header;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line == "\r") continue;
    const std::string where = cat(path, ":", lineno);
    Row r;
    if (jsonl) {
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception& e) {
        throw Error(cat(where, ": invalid JSON: ", e.what()));
      }
      r.path = json_required<std::string>(j, "path", where);
      r.label = json_required<std::string>(j, "label", where);
      r.split = json_optional<std::string>(j, "split", "", where);
      if (j.contains("soft") && j["soft"].is_object())
        for (auto it = j["soft"].begin(); it != j["soft"].end(); ++it)
          r.soft[it.key()] = it.value().get<float>();
    } else {
      auto cells = split_csv_line(line);
      if (header.empty()) {
        header = cells;
        if (std::find(header.begin(), header.end(), "path") == header.end() ||
            std::find(header.begin(), header.end(), "label") == header.end())
          throw Error(cat(where,
                          ": the CSV header must name the columns 'path' and 'label' (and "
                          "optionally 'split')"));
        continue;
      }
      if (cells.size() != header.size())
        throw Error(cat(where, ": ", cells.size(), " columns, the header has ", header.size()));
      for (size_t i = 0; i < header.size(); ++i) {
        if (header[i] == "path")
          r.path = cells[i];
        else if (header[i] == "label")
          r.label = cells[i];
        else if (header[i] == "split")
          r.split = cells[i];
        else if (header[i].rfind("soft_", 0) == 0 && !cells[i].empty())
          r.soft[header[i].substr(5)] = std::stof(cells[i]);
      }
    }
    if (!r.split.empty() && r.split != "train" && r.split != "val" && r.split != "test")
      throw Error(cat(where, ": split '", r.split, "' (train, val or test)"));
    r.path = resolve_stored_path(r.path, path);
    rows.push_back(std::move(r));
  }
  if (rows.empty()) throw Error(cat(path, ": the manifest lists no images"));
  return rows;
}

}  // namespace

Dataset load_dataset(const std::string& path, const DatasetOptions& opt) {
  Dataset d;
  d.source = path;
  if (!fs::exists(path)) throw Error(cat(path, ": no such dataset directory or manifest"));
  if (fs::is_directory(path)) {
    fs::path root(path);
    if (!fs::is_directory(root / "train"))
      throw Error(cat(path, ": no train/ folder (expected ROOT/{train,val,test}/<emotion>/)"));
    std::vector<std::string> classes = sorted_subdirs(root / "train");
    if (classes.empty()) throw Error(cat((root / "train").string(), ": no class folders"));
    if (opt.labels.empty()) {
      d.labels.name = "folders";
      d.labels.labels = classes;
    } else {
      d.labels = LabelSet::from_spec(opt.labels);
    }
    d.train = scan_split(root / "train", d.labels);
    check_classes(d.train, d.labels, (root / "train").string());
    if (fs::is_directory(root / "val")) {
      d.val = scan_split(root / "val", d.labels);
      d.val_origin = "val/";
    } else {
      auto [keep, held] = stratified_split(d.train, opt.val_fraction, opt.split_seed);
      d.train = keep;
      d.val = held;
      d.val_origin = cat(opt.val_fraction * 100, "% of train/, stratified, seed ", opt.split_seed);
    }
    if (fs::is_directory(root / "test")) {
      d.test = scan_split(root / "test", d.labels);
      d.test_origin = "test/";
    }
  } else {
    std::vector<Row> rows = read_manifest(path);
    std::vector<std::string> names;
    for (const auto& r : rows) names.push_back(r.label);
    if (opt.labels.empty()) {
      std::sort(names.begin(), names.end());
      names.erase(std::unique(names.begin(), names.end()), names.end());
      d.labels.name = "manifest";
      d.labels.labels = names;
    } else {
      d.labels = LabelSet::from_spec(opt.labels);
    }
    bool has_val = false, has_test = false;
    for (const auto& r : rows) {
      int idx = d.labels.index_of(r.label);
      if (idx < 0)
        throw Error(
            cat(path, ": image ", r.path, " has label '", r.label, "' outside ", d.labels.name));
      Sample s{r.path, idx, r.soft};
      if (r.split == "val")
        d.val.push_back(s), has_val = true;
      else if (r.split == "test")
        d.test.push_back(s), has_test = true;
      else
        d.train.push_back(s);
    }
    check_classes(d.train, d.labels, path + " (train)");
    d.val_origin = d.test_origin = "manifest";
    if (!has_test && opt.test_fraction > 0) {
      auto [keep, held] = stratified_split(d.train, opt.test_fraction, mix_seed(opt.split_seed, 1));
      d.train = keep;
      d.test = held;
      d.test_origin =
          cat(opt.test_fraction * 100, "% of the manifest, stratified, seed ", opt.split_seed);
    }
    if (!has_val) {
      auto [keep, held] = stratified_split(d.train, opt.val_fraction, opt.split_seed);
      d.train = keep;
      d.val = held;
      d.val_origin = cat(opt.val_fraction * 100, "% of train, stratified, seed ", opt.split_seed);
    }
  }
  if (d.train.empty()) throw Error(cat(path, ": the train split has no images"));
  return d;
}

}  // namespace emovlm
