// The image arguments of classify and predict: files as given, directories expanded.
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/data/dataset.h"

namespace emovlm::cli {

std::vector<std::string> image_arguments(const std::vector<std::string>& args) {
  namespace fs = std::filesystem;
  std::vector<std::string> out;
  for (const auto& a : args) {
    if (!fs::is_directory(a)) {
      out.push_back(a);  // a missing or unreadable file is reported when it is read
      continue;
    }
    const std::vector<std::string> found = list_image_files(a);
    if (found.empty()) throw Error(cat(a, ": a directory without image files"));
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

void report_image_error(const std::string& path, const std::string& message, bool as_json,
                        nlohmann::json& all) {
  if (as_json)
    all.push_back({{"image", path}, {"error", message}});
  else
    std::fprintf(stderr, "emovlm: error: %s\n", message.c_str());
}

}  // namespace emovlm::cli
