// Evaluation: every way of scoring models on a labelled split, with one report shape.
//
// Every report is a JSON object with "labels" (the classes, in order), "images" (the split's
// size) and "models": {name: classification report}, a report being accuracy, macro_f1,
// per_class {label: precision, recall, f1, support}, confusion, labels, n and unparsable
// (data/metrics.h), with "parameters" where the model's size is known. The names: "vlm",
// "teacher", "distill_head", "emovlm_kd". Reports made from images add "data", "split",
// "unreadable" (a count), "unreadable_images" ([{image, error}], or [{error}] naming the file where
// the image is not known; left out of the metrics) and "resumed" (results read back from a
// journal); those that keep per-image results, "predictions".
//
// - evaluate_cache: a cached test split (`emovlm evaluate`): all four models with 95% bootstrap
//   intervals, the gain of EmoVLM-KD over each input (paired interval, McNemar's exact test), the
//   oracle, the complementarity splits (Figure 1), parameter counts (Table 2), the validation
//   curves of stages 2 and 3; written as JSON and Markdown.
// - evaluate_vlm: the VLM alone from the images (`classify --data`).
// - evaluate_bundle: a bundle from the images (`predict --data`): vlm, distill_head, emovlm_kd.
// - evaluate_teacher: a trained teacher folder from the images (`teacher eval`).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/core/device.h"
#include "emovlm/data/dataset.h"

namespace emovlm {

class VlmClassifier;
class Predictor;

struct EvaluateOptions {
  std::string cache, distill, gate, out;  // out: directory for report.json / report.md ("" = none)
  int64_t bootstrap = 1000;               // resamples for the 95% intervals (0: none)
  uint64_t seed = 0;                      // of the resampling
};

nlohmann::json evaluate_cache(const EvaluateOptions& options);

// The VLM alone on one split, read with the classifier's label set; unparsable answers count as
// wrong. on_result: each image's result as it comes, with "truth" added. journal: a JSON-lines
// file that each result is appended to as it comes (its first line names the settings); a run
// that finds one written with the same settings classifies only the images it lacks, so a killed
// run resumes (run_split in split_eval.h). Other settings: an error naming the file and setting.
nlohmann::json evaluate_vlm(VlmClassifier& classifier, const std::string& data,
                            const std::string& split, const DatasetOptions& dataset,
                            const std::function<void(const nlohmann::json&)>& on_result = {},
                            const std::string& journal = "");

// The bundle on one split, from the images (no cache needed): the VLM's answer, the head's top
// class and the final emotion, the VLM-vs-head complementarity (Figure 1). batch: images per VLM
// forward (1: each alone, deterministic). on_result and journal: as evaluate_vlm.
nlohmann::json evaluate_bundle(Predictor& predictor, const std::string& data,
                               const std::string& split, const DatasetOptions& dataset, int batch,
                               const std::function<void(const nlohmann::json&)>& on_result = {},
                               const std::string& journal = "");

// A trained teacher folder (ViT, ResNet or VGG; its classes.json must equal the dataset's labels)
// on one split: the "teacher" model with its "arch" and "parameters" (a row of Table 1).
nlohmann::json evaluate_teacher(const std::string& teacher_dir, const std::string& data,
                                const std::string& split, const DatasetOptions& dataset,
                                int64_t batch = 32, int workers = 2, ComputeDevice device = {});
std::string evaluation_markdown(const nlohmann::json& report);
// The part of it on the gate: its gain over each input (or whether it beats them), the oracle, and
// how the intervals were made.
std::string gain_markdown(const nlohmann::json& report);
// The Table 1/2 rows (model, parameters, accuracy %, macro-F1 %, unparsable) of (name, report)
// pairs, each report a classification report with "parameters" (evaluate's models, teacher eval).
std::string models_table_markdown(const std::vector<std::pair<std::string, nlohmann::json>>& rows);

}  // namespace emovlm
