// Native dataset formats -> JSONL manifest.
#include "emovlm/data/convert.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/paths.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/labels.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : line) {
    if (c == '\t' || c == ',' || c == ' ' || c == '\r') {
      if (!cur.empty()) out.push_back(cur), cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

bool is_number(const std::string& s) {
  if (s.empty()) return false;
  char* end = nullptr;
  std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

json convert_emoset(const ConvertOptions& o, std::string& lines) {
  const LabelSet mikels = LabelSet::from_spec("mikels8");
  json rep = {{"format", "emoset"}, {"missing", json::array()}};
  int64_t n = 0;
  for (const char* split : {"train", "val", "test"}) {
    const std::string f = (fs::path(o.src) / (std::string(split) + ".json")).string();
    if (!file_exists(f)) {
      if (std::string(split) == "train")
        throw Error(cat(f, ": missing (EmoSet ships train.json, val.json, test.json)"));
      continue;
    }
    json entries = read_json_file(f);
    if (!entries.is_array())
      throw Error(cat(f, ": expected a list of [emotion, image_id, image_path, annotation_path]"));
    int64_t k = 0;
    for (const auto& e : entries) {
      ++k;
      if (!e.is_array() || e.size() < 3 || !e[0].is_string() || !e[2].is_string())
        throw Error(
            cat(f, ": entry ", k, " is not [emotion, image_id, image_path, annotation_path]"));
      const std::string label = e[0].get<std::string>();
      if (mikels.index_of(label) < 0)
        throw Error(cat(f, ": entry ", k, " has emotion '", label, "' outside Mikels' 8"));
      fs::path img = fs::path(o.images.empty() ? o.src : o.images) / e[2].get<std::string>();
      if (!fs::exists(img)) {
        rep["missing"].push_back(img.string());
        continue;
      }
      lines += json({{"path", img.string()}, {"label", label}, {"split", split}}).dump() + "\n";
      ++n;
    }
    rep["splits"][split] = k;
  }
  rep["images"] = n;
  rep["labels"] = mikels.labels;
  return rep;
}

json convert_emotion6(const ConvertOptions& o, std::string& lines) {
  const std::string gt = (fs::path(o.src) / "ground_truth.txt").string();
  std::ifstream in(gt);
  if (!in) throw Error(cat(gt, ": cannot open (Emotion6 ships ground_truth.txt)"));
  const std::string images = o.images.empty() ? (fs::is_directory(fs::path(o.src) / "images")
                                                     ? (fs::path(o.src) / "images").string()
                                                     : o.src)
                                              : o.images;
  const char* names[7] = {"anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"};
  json rep = {{"format", "emotion6"}, {"missing", json::array()}, {"ties", json::array()}};
  std::string line;
  int64_t lineno = 0, n = 0;
  while (std::getline(in, line)) {
    ++lineno;
    auto f = split_fields(line);
    if (f.empty()) continue;
    if (lineno == 1 && (f.size() < 2 || !is_number(f[1]))) continue;  // the header
    if (f.size() < 10)
      throw Error(cat(gt, ":", lineno, ": expected image, valence, arousal and 7 probabilities"));
    std::vector<double> p(7);
    for (int i = 0; i < 7; ++i) {
      if (!is_number(f[3 + i]))
        throw Error(cat(gt, ":", lineno, ": '", f[3 + i], "' is not a number"));
      p[i] = std::stod(f[3 + i]);
    }
    const double best = *std::max_element(p.begin(), p.begin() + 6);
    int label = static_cast<int>(std::max_element(p.begin(), p.begin() + 6) - p.begin());
    if (std::count(p.begin(), p.begin() + 6, best) > 1) rep["ties"].push_back(f[0]);
    fs::path img = fs::path(images) / f[0];
    if (!fs::exists(img)) {
      rep["missing"].push_back(img.string());
      continue;
    }
    json soft = json::object();
    for (int i = 0; i < 7; ++i) soft[names[i]] = p[i];
    lines += json({{"path", img.string()},
                   {"label", names[label]},
                   {"soft", soft},
                   {"valence", std::stod(f[1])},
                   {"arousal", std::stod(f[2])}})
                 .dump() +
             "\n";
    ++n;
  }
  rep["images"] = n;
  rep["labels"] = LabelSet::from_spec("ekman6").labels;
  rep["note"] =
      "the label is the dominant emotion among the six (neutral excluded); ties take the first in "
      "Ekman order";
  return rep;
}

json convert_votes(const ConvertOptions& o, std::string& lines) {
  std::ifstream in(o.src);
  if (!in) throw Error(cat(o.src, ": cannot open the vote-count file"));
  if (o.images.empty())
    throw Error("data convert --format votes: give --images DIR (where <id>.jpg lives)");
  json rep = {{"format", "votes"}, {"missing", json::array()}, {"ties", json::array()}};
  std::string line;
  int64_t lineno = 0, n = 0;
  int col_id = 0, col_pos = 1, col_neg = 2;
  while (std::getline(in, line)) {
    ++lineno;
    auto f = split_fields(line);
    if (f.empty()) continue;
    if (lineno == 1 && !(f.size() >= 3 && is_number(f[1]) && is_number(f[2]))) {
      // a header: find the positive/negative columns by name
      for (size_t i = 0; i < f.size(); ++i) {
        std::string h = f[i];
        for (auto& c : h) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (h.rfind("pos", 0) == 0)
          col_pos = static_cast<int>(i);
        else if (h.rfind("neg", 0) == 0)
          col_neg = static_cast<int>(i);
        else if (h == "id" || h == "image" || h == "image_id")
          col_id = static_cast<int>(i);
      }
      continue;
    }
    const int need = std::max({col_id, col_pos, col_neg});
    if (static_cast<int>(f.size()) <= need || !is_number(f[col_pos]) || !is_number(f[col_neg]))
      throw Error(
          cat(o.src, ":", lineno, ": expected an image id and positive/negative vote counts"));
    const double pos = std::stod(f[col_pos]), neg = std::stod(f[col_neg]);
    if (pos == neg) {
      rep["ties"].push_back(f[col_id]);
      continue;
    }
    fs::path img;
    for (const char* ext : {"", ".jpg", ".jpeg", ".png", ".gif", ".bmp"}) {
      fs::path c = fs::path(o.images) / (f[col_id] + ext);
      if (fs::exists(c) && fs::is_regular_file(c)) {
        img = c;
        break;
      }
    }
    if (img.empty()) {
      rep["missing"].push_back(f[col_id]);
      continue;
    }
    lines += json({{"path", img.string()},
                   {"label", pos > neg ? "positive" : "negative"},
                   {"soft", {{"positive", pos / (pos + neg)}, {"negative", neg / (pos + neg)}}}})
                 .dump() +
             "\n";
    ++n;
  }
  rep["images"] = n;
  rep["labels"] = LabelSet::from_spec("binary").labels;
  return rep;
}

// ROOT/{train,val,test}/<emotion>/ (the split from the folder), or ROOT/<emotion>/ (no split).
json convert_folders(const ConvertOptions& o, std::string& lines) {
  const fs::path root(o.src);
  if (!fs::is_directory(root)) throw Error(cat(o.src, ": not a directory"));
  json rep = {{"format", "folders"}};
  auto sorted_dirs = [](const fs::path& dir) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::error_code ec;
      if (e.is_directory(ec)) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  std::vector<std::pair<fs::path, std::string>> parts;  // (folder of class folders, split)
  if (fs::is_directory(root / "train")) {
    for (const char* split : {"train", "val", "test"})
      if (fs::is_directory(root / split)) parts.emplace_back(root / split, split);
  } else {
    parts.emplace_back(root, "");
  }
  std::set<std::string> labels;
  int64_t n = 0;
  for (const auto& [dir, split] : parts) {
    for (const auto& cls : sorted_dirs(dir)) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(cls)) {
        std::error_code
            ec;  // an entry that cannot be inspected (a link loop) is listed: reading it reports it
        if (!e.is_directory(ec) && is_image_file(e.path().string()))
          files.push_back(e.path().string());
      }
      std::sort(files.begin(), files.end());
      const std::string label = cls.filename().string();
      if (!files.empty()) labels.insert(label);
      for (const auto& f : files) {
        json row = {{"path", f}, {"label", label}};
        if (!split.empty()) row["split"] = split;
        lines += row.dump() + "\n";
        ++n;
      }
    }
  }
  if (n == 0)
    throw Error(cat(o.src, ": no images in ROOT/<emotion>/ or ROOT/{train,val,test}/<emotion>/"));
  rep["images"] = n;
  rep["labels"] = std::vector<std::string>(labels.begin(), labels.end());
  return rep;
}

// Gives the rows without a split a test / val / train split by o's fractions (stratified per
// label; the test share first, seeded with mix_seed(seed, 1) as load_dataset's, then val).
void assign_splits(const ConvertOptions& o, std::string& lines, json& rep) {
  if (o.test_fraction < 0 || o.val_fraction < 0 || o.test_fraction + o.val_fraction >= 1)
    throw Error(cat("data convert: --test-fraction ", o.test_fraction, " and --val-fraction ",
                    o.val_fraction, " must be >= 0 with a sum below 1"));
  std::vector<json> rows;
  std::istringstream in(lines);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(json::parse(line));
  if (o.test_fraction > 0 || o.val_fraction > 0) {
    std::map<std::string, int> label_index;
    std::vector<Sample> open;  // rows without a split; Sample::label indexes label_index
    std::map<std::string, size_t> row_of;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].contains("split")) continue;
      const std::string label = rows[i]["label"].get<std::string>();
      const int idx =
          label_index.emplace(label, static_cast<int>(label_index.size())).first->second;
      open.push_back({rows[i]["path"].get<std::string>(), idx, {}});
      row_of[open.back().path] = i;
    }
    if (open.empty())
      rep["note_split"] = "every image already has a split; --test-fraction/--val-fraction unused";
    std::vector<Sample> rest = open;
    if (o.test_fraction > 0) {
      auto [keep, held] = stratified_split(rest, o.test_fraction, mix_seed(o.split_seed, 1));
      for (const auto& s : held) rows[row_of.at(s.path)]["split"] = "test";
      rest = keep;
    }
    if (o.val_fraction > 0) {
      // a share of all open images, as the test share is
      auto [keep, held] =
          stratified_split(rest, o.val_fraction / (1 - o.test_fraction), o.split_seed);
      for (const auto& s : held) rows[row_of.at(s.path)]["split"] = "val";
      rest = keep;
    }
    for (const auto& s : rest) rows[row_of.at(s.path)]["split"] = "train";
    rep["split_seed"] = o.split_seed;
  }
  std::map<std::string, int64_t> counts;
  lines.clear();
  for (const auto& r : rows) {
    counts[r.value("split", "(none: train, val from --val-fraction at load)")]++;
    lines += r.dump() + "\n";
  }
  rep["split_counts"] = counts;
}

}  // namespace

json convert_dataset(const ConvertOptions& o) {
  std::string lines;
  json rep;
  if (o.format == "emoset")
    rep = convert_emoset(o, lines);
  else if (o.format == "emotion6")
    rep = convert_emotion6(o, lines);
  else if (o.format == "votes" || o.format == "flickr" || o.format == "instagram")
    rep = convert_votes(o, lines);
  else if (o.format == "folders")
    rep = convert_folders(o, lines);
  else
    throw Error(
        cat("data convert: --format must be emoset, emotion6, votes (flickr, instagram) or "
            "folders, not '",
            o.format, "'"));
  if (lines.empty()) throw Error(cat(o.src, ": no usable images found"));
  assign_splits(o, lines, rep);
  // image paths as the manifest stores them: relative to its folder (core/paths.h)
  std::string stored;
  std::istringstream in(lines);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json row = json::parse(line);
    row["path"] = store_path(row["path"].get<std::string>(), o.out);
    stored += row.dump() + "\n";
  }
  make_dirs(parent_folder(o.out));
  write_file_atomic(o.out, stored);
  rep["manifest"] = o.out;
  return rep;
}

}  // namespace emovlm
