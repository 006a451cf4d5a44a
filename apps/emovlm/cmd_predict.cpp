// `emovlm predict`: the emotion of each image from a bundle, with how the VLM, the head and the
// gate saw it; or the bundle's metrics on a labelled split.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/pipeline/evaluate.h"
#include "emovlm/pipeline/predictor.h"

namespace emovlm::cli {

namespace {

using json = nlohmann::json;

struct PredictArgs {
  std::string bundle;
  ComputeDevice device;  // auto
  std::vector<std::string> images;
  SplitArgs split;  // --data: the bundle evaluated on a labelled split
  bool as_json = false;
  int batch = 1;
};

// "label p, label p, ..." with three decimals
std::string listing(const std::vector<std::pair<double, std::string>>& v) {
  std::string s;
  char prob[32];
  for (const auto& [pr, label] : v) {
    std::snprintf(prob, sizeof prob, "%.3f", pr);
    s += cat(s.empty() ? "" : ", ", label, " ", prob);
  }
  return s;
}

// One prediction as text: the emotion, the VLM's answer and scores, the head's top 3, and how
// much the gate moved with each input.
void print_prediction(const json& r) {
  std::printf("%s: %s (%.3f)\n", r["image"].get<std::string>().c_str(),
              r["emotion"].get<std::string>().c_str(), r["confidence"].get<double>());
  std::vector<std::pair<double, std::string>> vlm, head;
  for (const auto& [label, pr] : r["vlm"]["probabilities"].items())
    vlm.emplace_back(pr.get<double>(), label);
  std::stable_sort(vlm.begin(), vlm.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  vlm.resize(std::min<size_t>(vlm.size(), 3));
  for (const auto& h : r["head_top3"])
    head.emplace_back(h["probability"].get<double>(), h["label"].get<std::string>());
  std::printf("  VLM answer: %s (label scores: %s)\n",
              r["vlm"]["answer"].get<std::string>().c_str(), listing(vlm).c_str());
  std::printf("  head top-3: %s\n", listing(head).c_str());
  if (r["gate"].contains("influence")) {
    // how much each input moved the answer: its probability minus that with the input made neutral
    const json& in = r["gate"]["influence"];
    auto part = [&](const char* name, const char* key, const json& alt) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s %+.3f (without it: %s %.3f)", name, in[key].get<double>(),
                    alt["emotion"].get<std::string>().c_str(),
                    alt["emotion_probability"].get<double>());
      return std::string(buf);
    };
    std::printf("  moved by: %s, %s\n", part("VLM", "vlm", in["without_vlm"]).c_str(),
                part("head", "head", in["without_head"]).c_str());
  }
  if (r["gate"].contains("weights"))
    std::printf(
        "  gate (%s) weighed VLM %.2f, head %.2f\n", r["gate"]["kind"].get<std::string>().c_str(),
        r["gate"]["weights"]["vlm"].get<double>(), r["gate"]["weights"]["head"].get<double>());
  std::fflush(stdout);
}

void run_predict(const PredictArgs& a) {
  const bool on_split = a.split.chosen(a.images, "predict");
  Predictor pred(a.bundle, a.device);
  if (on_split) {
    run_split_report(a.split, a.as_json, [&](const auto& on_result, const std::string& journal) {
      return evaluate_bundle(pred, a.split.data, a.split.split, a.split.dataset, a.batch, on_result,
                             journal);
    });
    return;
  }
  const std::vector<std::string> images = image_arguments(a.images);
  ImageResults results(a.as_json, print_prediction);
  // printed as each batch comes
  pred.predict_stream(images, a.batch, [&](const json& r) { results(r); });
  results.finish(images.size(), "predicted");
}

}  // namespace

void add_predict_command(CLI::App& app) {
  auto p = std::make_shared<PredictArgs>();
  CLI::App* pr = app.add_subcommand(
      "predict", "The emotion of each image, with how the VLM, the head and the gate saw it");
  add_bundle_flag(pr, p->bundle);
  add_images_arg(pr, p->images);
  add_split_flags(pr, p->split,
                  "accuracy and macro-F1 of the VLM, the head and EmoVLM-KD, from the images (no "
                  "cache needed)");
  add_batch_flag(pr, p->batch,
                 "images per VLM forward (1: each alone, independent of the others; more: faster "
                 "on a GPU, equal to float rounding)");
  add_device_flag(pr, p->device);
  add_json_flag(pr, p->as_json);
  pr->callback([p] { run_predict(*p); });
}

}  // namespace emovlm::cli
