// JSON helpers: read a file with errors that name it, and typed field access that names the field.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "emovlm/core/error.h"

namespace emovlm {

using json = nlohmann::json;

// Parses a JSON file; errors name the path and the parser's position.
json read_json_file(const std::string& path);

// Required field `key` of object `j` as T; `where` names the file/object in errors.
template <typename T>
T json_required(const json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) throw Error(cat(where, ": missing field '", key, "'"));
  try {
    return it->get<T>();
  } catch (const json::exception& e) {
    throw Error(cat(where, ": field '", key, "' has the wrong type (", it->type_name(), ")"));
  }
}

// Optional field with a default; a present field of the wrong type is an error.
template <typename T>
T json_optional(const json& j, const std::string& key, const T& fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception& e) {
    throw Error(cat(where, ": field '", key, "' has the wrong type (", it->type_name(), ")"));
  }
}

// Where two JSON values first differ, for refusals that name the field: "" when equal, else
// "<pointer>: <old> (now <new>)" with the JSON pointer of the first differing field, e.g.
// "/vlm/files/0/hash: \"1a2b...\" (now \"9f8e...\")". Values longer than 80 characters are cut.
std::string json_first_difference(const json& before, const json& now);

}  // namespace emovlm
