// Label sets, the categorical prompt and answer parsing.
#include "emovlm/data/labels.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <regex>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"

namespace emovlm {

namespace {
std::string trim_lower(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  std::string out = s.substr(b, e - b);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}
}  // namespace

LabelSet LabelSet::from_spec(const std::string& spec) {
  LabelSet s;
  if (spec == "mikels8") {
    s.name = spec;
    s.labels = {"amusement", "anger",      "awe",  "contentment",
                "disgust",   "excitement", "fear", "sadness"};
  } else if (spec == "ekman6") {
    s.name = spec;
    s.labels = {"anger", "disgust", "fear", "joy", "sadness", "surprise"};
  } else if (spec == "binary") {
    s.name = spec;
    s.labels = {"negative", "positive"};
  } else {
    s.name = "custom";
    size_t pos = 0;
    while (pos <= spec.size()) {
      size_t comma = spec.find(',', pos);
      std::string item = trim_lower(
          spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
      if (!item.empty()) s.labels.push_back(item);
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    std::sort(s.labels.begin(), s.labels.end());
    if (s.labels.size() < 2)
      throw Error(
          cat("label set '", spec,
              "': use mikels8, ekman6, binary or a comma-separated list of 2 or more labels"));
    if (std::adjacent_find(s.labels.begin(), s.labels.end()) != s.labels.end())
      throw Error(cat("label set '", spec, "' names a label twice"));
  }
  return s;
}

int LabelSet::index_of(const std::string& label) const {
  std::string l = trim_lower(label);
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] == l) return static_cast<int>(i);
  return -1;
}

int LabelSet::require_index(const std::string& label) const {
  int i = index_of(label);
  if (i < 0) {
    std::string all;
    for (const auto& l : labels) all += (all.empty() ? "" : ", ") + l;
    throw Error(cat("label '", label, "' is not in the label set ", name, " (", all, ")"));
  }
  return i;
}

std::string categorical_prompt(const LabelSet& set) {
  const auto& l = set.labels;
  std::string list;
  for (size_t i = 0; i < l.size(); ++i) {
    if (i > 0) list += l.size() == 2 ? " and " : (i + 1 == l.size() ? ", and " : ", ");
    list += l[i];
  }
  return "Observe the image and select the emotion category that best matches this image from the "
         "following " +
         std::to_string(l.size()) + " categories: " + list +
         ". Answer in dictionary form as follows: {'emotion':'" + l.front() + "'}";
}

std::string categorical_answer(const std::string& label) {
  return "{'emotion': '" + label + "'}";
}

ParsedAnswer parse_categorical_answer(const std::string& text, const LabelSet& labels) {
  // {'emotion': 'x'} / {"emotion": "x"}, any spaces, non-greedy label
  static const std::regex re(R"(\{\s*['"]emotion['"]\s*:\s*['"](.*?)['"]\s*\})");
  ParsedAnswer a;
  std::smatch m;
  if (std::regex_search(text, m, re)) {
    a.raw = m[1].str();
    a.index = labels.index_of(a.raw);
  }
  return a;
}

std::vector<std::string> read_classes(const std::string& dir) {
  const std::string p = (std::filesystem::path(dir) / "classes.json").string();
  nlohmann::json j = read_json_file(p);
  return json_required<std::vector<std::string>>(j, "labels", p);
}

void write_classes(const std::string& dir, const LabelSet& labels) {
  nlohmann::json j = {{"label_set", labels.name}, {"labels", labels.labels}};
  write_file_atomic((std::filesystem::path(dir) / "classes.json").string(), j.dump(1) + "\n");
}

}  // namespace emovlm
