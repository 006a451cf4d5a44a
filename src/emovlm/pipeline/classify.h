// The VLM alone as an emotion classifier: label scores (deterministic, a distribution over the
// labels) or the reference's generate-and-parse, over image files (evaluate_vlm in evaluate.h runs
// it over a labelled split). `emovlm classify` is this file's command.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/core/device.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/labels.h"

namespace emovlm {

struct ClassifyOptions {
  std::string vlm, adapter;  // checkpoint directory; optional PEFT adapter merged at load
  ComputeDtype dtype = ComputeDtype::bf16;
  ComputeDevice device;            // auto
  std::string labels = "mikels8";  // mikels8, ekman6, binary or a,b,c
  std::string mode = "score";      // score or generate
  int batch = 1;  // score mode: images per VLM forward (1: each alone, deterministic)
  int max_new_tokens =
      256;  // generate mode: the reference's sampling, merged with generation_config.json
  double temperature = 0.8;
  uint64_t seed = 0;  // each image samples from prompt_seed(seed, its pixels): its answer depends
                      // on nothing else
  bool cuda_graph = false;
  int cap_long_side = 1024;  // images are shrunk to this longest side before preprocessing

  void validate() const;
};

class VlmClassifier {
 public:
  explicit VlmClassifier(const ClassifyOptions& options);
  ~VlmClassifier();
  // Each image in order, decoded on worker threads. on_result receives per image:
  //   score:    {"image", "label", "probabilities": {label: p}, "sum_logprob": {label: s}}
  //   generate: {"image", "answer", "label" (null when unparsable)[, "unparsable": true]}
  //   or, when the file cannot be read: {"image", "error"}.
  void classify(const std::vector<std::string>& paths,
                const std::function<void(const nlohmann::json&)>& on_result);
  const LabelSet& labels() const;
  const ClassifyOptions& options() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace emovlm
