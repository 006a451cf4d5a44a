// `emovlm demo`: the whole EmoVLM-KD pipeline on built-in data with tiny models, using the same
// library calls the commands make on real data: synthetic dataset, instruction data (templated
// answers instead of an endpoint), a byte-level BPE tokenizer trained on the instructions, stage 1
// (a Qwen2-VL-shaped VLM tuned from scratch), the ViT teacher (from scratch), the feature cache,
// stages 2 and 3, evaluation, a bundle and predictions, and a final report.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace emovlm {

struct DemoOptions {
  std::string out = "demo-out";
  bool quick = false;  // fewer images and epochs (the test suite's run)
  uint64_t seed = 1;
};

nlohmann::json run_demo(const DemoOptions& options);

}  // namespace emovlm
