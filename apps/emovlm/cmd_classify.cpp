// `emovlm classify`: the emotion of each image from the VLM alone (label scores or the
// reference's generate-and-parse), or its metrics on a labelled split.
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/pipeline/classify.h"
#include "emovlm/pipeline/evaluate.h"

namespace emovlm::cli {

namespace {

using json = nlohmann::json;

struct ClassifyArgs {
  ClassifyOptions o;
  std::vector<std::string> images;
  SplitArgs split;  // --data: the VLM evaluated on a labelled split
  bool as_json = false;
};

void print_scores(const json& r, const std::vector<std::string>& labels) {
  std::printf("%s: %s\n", r["image"].get<std::string>().c_str(),
              r["label"].is_null() ? "(unparsable answer)" : r["label"].get<std::string>().c_str());
  if (r.contains("probabilities"))
    for (const auto& l : labels)
      std::printf("  %-12s %.4f\n", l.c_str(), r["probabilities"][l].get<double>());
  if (r.contains("answer")) std::printf("  answer: %s\n", r["answer"].get<std::string>().c_str());
  std::fflush(stdout);
}

void run_classify(const ClassifyArgs& a) {
  const bool on_split = a.split.chosen(a.images, "classify");
  VlmClassifier classifier(a.o);
  const std::vector<std::string>& labels = classifier.labels().labels;
  if (on_split) {
    run_split_report(a.split, a.as_json, [&](const auto& on_result, const std::string& journal) {
      return evaluate_vlm(classifier, a.split.data, a.split.split, a.split.dataset, on_result,
                          journal);
    });
    return;
  }
  const std::vector<std::string> images = image_arguments(a.images);
  ImageResults results(a.as_json, [&](const json& r) { print_scores(r, labels); });
  classifier.classify(images, [&](const json& r) { results(r); });
  results.finish(images.size(), "classified");
}

}  // namespace

void add_classify_command(CLI::App& app) {
  auto k = std::make_shared<ClassifyArgs>();
  CLI::App* cmd = app.add_subcommand(
      "classify", "Emotion of each image from the VLM: label scores or generate-and-parse");
  add_vlm_flag(cmd, k->o.vlm);
  add_adapter_flag(cmd, k->o.adapter);
  add_images_arg(cmd, k->images);
  add_split_flags(cmd, k->split, "accuracy, macro-F1, per class");
  add_labels_flag(cmd, k->o.labels, "the label set: mikels8, ekman6, binary or a,b,c")
      ->capture_default_str();
  cmd->add_option(
         "--mode", k->o.mode,
         "score (deterministic label scores) or generate (the reference's sampling + parsing)")
      ->capture_default_str()
      ->check(CLI::IsMember({"score", "generate"}));
  cmd->add_option("--temperature", k->o.temperature,
                  "generate mode: temperature (merged with generation_config.json)")
      ->capture_default_str()
      ->group("Sampling");
  cmd->add_option("--max-new-tokens", k->o.max_new_tokens, "generate mode: the longest answer")
      ->capture_default_str()
      ->group("Sampling");
  add_seed_flag(cmd, k->o.seed, "generate mode: sampling seed (mixed with each image's pixels)",
                "Sampling");
  add_batch_flag(cmd, k->o.batch,
                 "score mode: images per VLM forward (1: each alone, independent of the others; "
                 "more: faster on a GPU, equal to float rounding)");
  add_dtype_flag(cmd, k->o.dtype, "compute dtype: bf16, f16 or f32");
  add_device_flag(cmd, k->o.device);
  add_cuda_graph_flag(cmd, k->o.cuda_graph);
  add_json_flag(cmd, k->as_json);
  cmd->callback([k] { run_classify(*k); });
}

}  // namespace emovlm::cli
