// The image arguments of classify and predict (files as given, directories expanded) and their
// per-image results.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <utility>

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

CLI::Option* add_images_arg(CLI::App* cmd, std::vector<std::string>& images) {
  return cmd->add_option("images", images,
                         "image files (JPEG, PNG, GIF, BMP, WebP) or folders of them");
}

ImageResults::ImageResults(bool as_json, std::function<void(const nlohmann::json&)> print)
    : as_json_(as_json), print_(std::move(print)), all_(nlohmann::json::array()) {}

void ImageResults::operator()(const nlohmann::json& r) {
  if (r.contains("error")) {
    ++failed_;
    if (as_json_)
      all_.push_back({{"image", r["image"]}, {"error", r["error"]}});
    else
      std::fprintf(stderr, "emovlm: error: %s\n", r["error"].get<std::string>().c_str());
  } else if (as_json_) {
    all_.push_back(r);
  } else {
    print_(r);
  }
}

void ImageResults::finish(size_t images, const std::string& done) {
  if (as_json_) std::cout << all_.dump(1) << std::endl;
  if (failed_)
    throw Error(cat(failed_, " of ", images, " images could not be ", done, " (see above)"));
}

}  // namespace emovlm::cli
