// JSON helpers.
#include "emovlm/core/json_util.h"

#include "emovlm/core/files.h"

namespace emovlm {

json read_json_file(const std::string& path) {
  std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // syntax, and numbers out of range such as 1e999
    throw Error(cat(path, ": invalid JSON: ", e.what()));
  }
}

namespace {

std::string short_dump(const json& j) {
  std::string s = j.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

std::string escape_pointer_token(const std::string& key) {
  std::string out;
  for (char c : key) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return out;
}

std::string first_difference(const json& a, const json& b, const std::string& at) {
  if (a == b) return "";
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      const std::string here = at + "/" + escape_pointer_token(it.key());
      if (!b.contains(it.key())) return cat(here, ": ", short_dump(it.value()), " (now absent)");
      std::string d = first_difference(it.value(), b[it.key()], here);
      if (!d.empty()) return d;
    }
    for (auto it = b.begin(); it != b.end(); ++it)
      if (!a.contains(it.key()))
        return cat(at, "/", escape_pointer_token(it.key()), ": absent (now ",
                   short_dump(it.value()), ")");
  }
  if (a.is_array() && b.is_array()) {
    for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
      std::string d = first_difference(a[i], b[i], cat(at, "/", i));
      if (!d.empty()) return d;
    }
    return cat(at.empty() ? "/" : at, ": ", a.size(), " entries (now ", b.size(), ")");
  }
  return cat(at.empty() ? "/" : at, ": ", short_dump(a), " (now ", short_dump(b), ")");
}

}  // namespace

std::string json_first_difference(const json& before, const json& now) {
  return first_difference(before, now, "");
}

}  // namespace emovlm
