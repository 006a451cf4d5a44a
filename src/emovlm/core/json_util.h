// JSON helpers: read a file with errors that name it, and typed field access that names the field.
#pragma once

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "emovlm/core/error.h"

namespace emovlm {

using json = nlohmann::json;

// Parses a JSON file; errors name the path and the parser's position.
json read_json_file(const std::string& path);

namespace detail {

// An integer type that a JSON number must fit exactly (bool excluded: JSON has its own).
template <typename T>
constexpr bool kStrictInteger = std::is_integral_v<T> && !std::is_same_v<T, bool>;

// Value `v` (field `key`) as an integer of type T: a float must be integral and in range (the
// JSON library would otherwise convert 19e99 with undefined behaviour), an integer in range.
template <typename T>
T json_integer(const json& v, const std::string& key, const std::string& where) {
  const double hi = std::ldexp(1.0, std::numeric_limits<T>::digits);  // 2^63 for int64_t: exact
  const double lo = std::is_signed_v<T> ? -hi : 0.0;
  bool ok = false;
  if (v.is_number_float()) {
    const double d = v.get<double>();
    ok = d >= lo && d < hi && d == std::floor(d);
  } else if (v.is_number_unsigned()) {
    ok = v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  } else if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if constexpr (std::is_signed_v<T>)
      ok = x >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
           x <= static_cast<int64_t>(std::numeric_limits<T>::max());
    else
      ok = x >= 0 &&
           static_cast<uint64_t>(x) <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  } else {
    throw Error(cat(where, ": field '", key, "' has the wrong type (", v.type_name(), ")"));
  }
  if (!ok)
    throw Error(cat(where, ": field '", key, "' is not an integer in range (", v.dump(), ")"));
  return v.is_number_float() ? static_cast<T>(v.get<double>()) : v.get<T>();
}

template <typename T>
struct is_vector : std::false_type {};
template <typename T>
struct is_vector<std::vector<T>> : std::true_type {};

template <typename T>
T json_as(const json& v, const std::string& key, const std::string& where) {
  if constexpr (kStrictInteger<T>) {
    return json_integer<T>(v, key, where);
  } else if constexpr (is_vector<T>::value) {
    if constexpr (kStrictInteger<typename T::value_type>) {
      if (!v.is_array())
        throw Error(cat(where, ": field '", key, "' has the wrong type (", v.type_name(), ")"));
      T out;
      for (const json& e : v) out.push_back(json_integer<typename T::value_type>(e, key, where));
      return out;
    }
  }
  try {
    return v.get<T>();
  } catch (const json::exception& e) {
    throw Error(cat(where, ": field '", key, "' has the wrong type (", v.type_name(), ")"));
  }
}

}  // namespace detail

// Required field `key` of object `j` as T; `where` names the file/object in errors. Integer
// types take only integral numbers in their range.
template <typename T>
T json_required(const json& j, const std::string& key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) throw Error(cat(where, ": missing field '", key, "'"));
  return detail::json_as<T>(*it, key, where);
}

// Optional field with a default; a present field of the wrong type is an error.
template <typename T>
T json_optional(const json& j, const std::string& key, const T& fallback,
                const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return detail::json_as<T>(*it, key, where);
}

// Where two JSON values first differ, for refusals that name the field: "" when equal, else
// "<pointer>: <old> (now <new>)" with the JSON pointer of the first differing field, e.g.
// "/vlm/files/0/hash: \"1a2b...\" (now \"9f8e...\")". Values longer than 80 characters are cut.
std::string json_first_difference(const json& before, const json& now);

}  // namespace emovlm
