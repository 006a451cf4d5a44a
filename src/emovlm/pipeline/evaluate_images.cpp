// Evaluation on one split of a labelled dataset from its images: the VLM alone, a bundle, a
// teacher. Each report has the shape evaluate.h describes.
#include <memory>
#include <utility>

#include "emovlm/core/error.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/labels.h"
#include "emovlm/data/metrics.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/pipeline/classify.h"
#include "emovlm/pipeline/evaluate.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/pipeline/split_eval.h"
#include "emovlm/train/teacher.h"

namespace emovlm {

using json = nlohmann::json;

namespace {

// The fields every evaluation from images shares: the split, how many images it has and which
// could not be read, and one classification report per named model.
json images_report(const std::vector<std::string>& labels, const std::string& data,
                   const std::string& split, size_t images, json unreadable,
                   const std::vector<std::pair<std::string, const SplitPredictions*>>& models) {
  json report = {{"labels", labels},
                 {"data", data},
                 {"split", split},
                 {"images", images},
                 {"unreadable", unreadable.size()},
                 {"unreadable_images", std::move(unreadable)},
                 {"models", json::object()}};
  const int C = static_cast<int>(labels.size());
  for (const auto& [name, p] : models)
    report["models"][name] = classification_report(p->pred, p->truth, C).to_json(labels);
  return report;
}

// The same for a journaled run through run_split.
json split_report(const SplitRun& r, const std::string& data, const std::string& split,
                  const std::vector<std::pair<std::string, const SplitPredictions*>>& models) {
  json report =
      images_report(r.labels.labels, data, split, r.samples.size(), split_unreadable(r), models);
  report["resumed"] = r.resumed;
  return report;
}

}  // namespace

json evaluate_vlm(VlmClassifier& classifier, const std::string& data, const std::string& split,
                  const DatasetOptions& dataset, const std::function<void(const json&)>& on_result,
                  const std::string& journal) {
  const ClassifyOptions& o = classifier.options();
  // what the results depend on (a journal written with other settings is not reused); not the
  // data's path: the journal's results are keyed by image, and the split says which images are
  // needed
  json settings = {{"vlm", checkpoint_identity(o.vlm)},
                   {"adapter", o.adapter.empty() ? json(nullptr) : checkpoint_identity(o.adapter)},
                   {"dtype", dtype_name(o.dtype)},
                   {"labels", o.labels},
                   {"mode", o.mode},
                   {"cap_long_side", o.cap_long_side},
                   {"batch", o.batch}};
  if (o.mode == "generate")
    settings.update({{"temperature", o.temperature},
                     {"seed", o.seed},
                     {"seeding", "per image"},
                     {"max_new_tokens", o.max_new_tokens}});
  const SplitRun r = run_split(
      data, split, dataset, o.labels, settings,
      [&](const std::vector<std::string>& paths, const std::function<void(const json&)>& emit) {
        classifier.classify(paths, emit);
      },
      on_result, journal);
  const SplitPredictions p = split_predictions(r, [](const json& row) { return row["label"]; });
  json predictions = json::array();
  for (size_t i = 0; i < r.rows.size(); ++i)
    if (!r.rows[i].contains("error"))
      predictions.push_back({{"image", r.samples[i].path},
                             {"truth", r.rows[i]["truth"]},
                             {"label", r.rows[i]["label"]}});
  json report = split_report(r, data, split, {{"vlm", &p}});
  report.update({{"vlm", o.vlm}, {"adapter", o.adapter}, {"mode", o.mode}});
  if (o.mode == "generate") report["sampling"] = {{"temperature", o.temperature}, {"seed", o.seed}};
  report["predictions"] = std::move(predictions);
  return report;
}

json evaluate_bundle(Predictor& predictor, const std::string& data, const std::string& split,
                     const DatasetOptions& dataset, int batch,
                     const std::function<void(const json&)>& on_result,
                     const std::string& journal) {
  if (batch < 1) throw Error(cat("evaluate_bundle: batch must be 1 or more, not ", batch));
  std::string labels;
  for (const std::string& l : predictor.labels()) labels += (labels.empty() ? "" : ",") + l;
  const json settings = {{"predictor", predictor.identity()}, {"batch", batch}};
  const SplitRun r = run_split(
      data, split, dataset, labels, settings,
      [&](const std::vector<std::string>& paths, const std::function<void(const json&)>& emit) {
        predictor.predict_stream(paths, batch, emit);
      },
      on_result, journal);
  const SplitPredictions vlm =
      split_predictions(r, [](const json& row) { return row["vlm"]["answer"]; });
  const SplitPredictions head =
      split_predictions(r, [](const json& row) { return row["head_top3"][0]["label"]; });
  const SplitPredictions final_ =
      split_predictions(r, [](const json& row) { return row["emotion"]; });
  json predictions = json::array();
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const json& row = r.rows[i];
    if (row.contains("error")) continue;
    predictions.push_back({{"image", r.samples[i].path},
                           {"truth", row["truth"]},
                           {"emotion", row["emotion"]},
                           {"vlm", row["vlm"]["answer"]},
                           {"head", row["head_top3"][0]["label"]}});
  }
  json report = split_report(r, data, split,
                             {{"vlm", &vlm}, {"distill_head", &head}, {"emovlm_kd", &final_}});
  report.update({{"bundle", settings["predictor"]["bundle"]}, {"batch", batch}});
  report["complementarity"] = {
      {"vlm_vs_head", complementarity(vlm.pred, head.pred, vlm.truth).to_json("vlm", "head")}};
  report["predictions"] = std::move(predictions);
  return report;
}

json evaluate_teacher(const std::string& dir, const std::string& data, const std::string& split,
                      const DatasetOptions& dataset, int64_t batch, int workers,
                      ComputeDevice device) {
  std::shared_ptr<ImageClassifierImpl> model = load_image_classifier(dir);
  model->eval();
  model->to(to_torch(device));
  const std::vector<std::string> classes = read_classes(dir);
  const Dataset d = load_dataset(data, dataset);
  if (d.labels.labels != classes)
    throw Error(cat(dir, ": the teacher was trained on other classes than ", data, " has"));
  const std::vector<Sample>& samples = d.split(split);
  SplitPredictions p;
  std::vector<std::string> failures;
  p.pred = predict_all(*model, samples, classifier_image_config(dir), batch, workers, &p.truth,
                       &failures, "teacher eval");
  check_readable(cat("the ", split, " split"), data, samples.size(), failures);
  json unreadable = json::array();
  for (const std::string& f : failures) unreadable.push_back({{"error", f}});
  json report =
      images_report(classes, data, split, samples.size(), std::move(unreadable), {{"teacher", &p}});
  report["models"]["teacher"]["parameters"] = model->num_parameters();
  report["models"]["teacher"]["arch"] = model->arch();
  report["models"]["teacher"]["display_name"] = classifier_display_name(model->arch());
  report.update({{"teacher", dir}, {"arch", model->arch()}, {"resumed", 0}});
  return report;
}

}  // namespace emovlm
