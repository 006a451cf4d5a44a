// One split of a labelled dataset through a model that labels images (the VLM alone, a bundle),
// journaled so that a killed run resumes, and the metrics of each labelling in its results.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/data/dataset.h"

namespace emovlm {

// Labels `paths` in order, calling emit once per image with a JSON object holding "image" (and
// "error" when the image could not be read).
using ImageRunner = std::function<void(const std::vector<std::string>& paths,
                                       const std::function<void(const nlohmann::json&)>& emit)>;

struct SplitRun {
  LabelSet labels;                   // the dataset's (checked against the model's)
  std::vector<Sample> samples;       // the split, in order
  std::vector<nlohmann::json> rows;  // per sample: the runner's result, "truth" added
  int64_t resumed = 0;               // rows read back from the journal
};

// Reads the split with `labels` (a label-set spec) and runs the images through `run`.
// journal: a JSON-lines file that each result is appended to as it comes, `settings` on its first
// line, image paths relative to the journal's folder; a run that finds one written with the same
// settings runs only the images it lacks, matched by identity however their paths are spelled (a
// last line cut short by a kill is dropped). Other settings: an error naming the file and the
// first setting that differs. The journal is locked for the run (one writer). on_result: each new
// result as it comes. When no image of the split can be read: an Error; above 1%: a warning.
SplitRun run_split(const std::string& data, const std::string& split, DatasetOptions dataset,
                   const std::string& labels, const nlohmann::json& settings,
                   const ImageRunner& run,
                   const std::function<void(const nlohmann::json&)>& on_result,
                   const std::string& journal);

// The class index that label_of(row) names (-1: none, i.e. an unparsable answer) for each row
// that was read, and the true classes of the same rows.
struct SplitPredictions {
  std::vector<int> pred, truth;
};
SplitPredictions split_predictions(
    const SplitRun& r, const std::function<nlohmann::json(const nlohmann::json&)>& label_of);

// [{image, error}] of the images that could not be read (left out of the metrics).
nlohmann::json split_unreadable(const SplitRun& r);

// A split report as the file `report_path` stores it: its image and data paths relative to the
// report's folder (core/paths.h).
nlohmann::json split_report_for_file(nlohmann::json report, const std::string& report_path);

}  // namespace emovlm
