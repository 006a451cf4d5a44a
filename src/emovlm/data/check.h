// `emovlm data check`: what a dataset holds before anything trains on it. Counts per split and
// class, files with the same content (within a split, across splits: a test image that is also a
// training image, and the same image under two labels), and with --decode every image decoded
// (unreadable files named with their errors, image sizes).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/data/dataset.h"

namespace emovlm {

struct CheckOptions {
  std::string data;        // dataset root or manifest
  DatasetOptions dataset;  // labels and the validation split, as the other commands take them
  bool decode = false;     // decode every image (slower; finds truncated and corrupt files)
  int threads = 0;         // 0: every core
  std::string out;         // the report (.json), written atomically; "" = none
};

// Returns the report: {"splits": {name: {"images", "per_class"}}, "duplicates": [{"paths",
// "splits", "labels"}...], "cross_split_duplicates", "conflicting_labels", "unreadable":
// [{"path", "error"}], "sizes": {"width"/"height": {min, median, max}}}.
nlohmann::json check_dataset(const CheckOptions& options);

}  // namespace emovlm
