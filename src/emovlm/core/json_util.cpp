// JSON helpers.
#include "emovlm/core/json_util.h"

#include "emovlm/core/files.h"

namespace emovlm {

json read_json_file(const std::string& path) {
  std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(cat(path, ": invalid JSON: ", e.what()));
  }
}

}  // namespace emovlm
