// Prediction from a bundle: one directory that names everything prediction needs (the VLM, the
// head, the gate, the labels, the preprocessing), so that `emovlm predict --bundle DIR IMAGE...`
// is enough.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace emovlm {

struct BundleSpec {
  std::string vlm, adapter, distill, gate;
  std::string dtype = "bf16";
  int cap_long_side = 1024;
};

// Writes OUT/bundle.json and copies the head and gate files into OUT.
void write_bundle(const std::string& out, const BundleSpec& spec);

class Predictor {
 public:
  explicit Predictor(const std::string& bundle_dir, const std::string& device = "auto");
  ~Predictor();
  // Per image: the final emotion, the VLM's scores and answer, the head's top-3, the gate's weights.
  nlohmann::json predict(const std::string& image_path);
  // Several images: decoded on threads, then one left-padded VLM forward for all of them (faster on
  // a GPU; equal to predict() of each to float rounding), or each alone when deterministic (equal
  // to predict() exactly). An image that cannot be read gives {"image", "error"} in its place.
  std::vector<nlohmann::json> predict_batch(const std::vector<std::string>& image_paths, bool deterministic);
  const std::vector<std::string>& labels() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace emovlm
