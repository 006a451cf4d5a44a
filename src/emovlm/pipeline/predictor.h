// Prediction from a bundle: one directory that names everything prediction needs (the VLM, the
// head, the gate, the labels, the preprocessing), so that `emovlm predict --bundle DIR IMAGE...`
// is enough.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/core/device.h"
#include "emovlm/data/dataset.h"
#include "emovlm/image/image.h"

namespace emovlm {

class Qwen2VLImpl;
class Qwen2VLProcessor;

struct BundleSpec {
  std::string vlm, adapter, distill, gate;
  ComputeDtype dtype = ComputeDtype::bf16;
  int cap_long_side = 1024;
};

// Writes OUT/bundle.json and copies the head and gate files into OUT.
void write_bundle(const std::string& out, const BundleSpec& spec);

class Predictor {
 public:
  explicit Predictor(const std::string& bundle_dir, ComputeDevice device = {});
  ~Predictor();
  // Per image: the final emotion, the VLM's scores and answer, the head's top-3, the gate's
  // weights.
  nlohmann::json predict(const std::string& image_path);
  // Several images: decoded on threads, then one left-padded VLM forward for all of them (one for
  // those before and one for those after an unreadable image; faster on a GPU; equal to predict()
  // of each to float rounding), or each alone when deterministic (equal to predict() exactly). An
  // image that cannot be read gives {"image", "error"} in its place.
  std::vector<nlohmann::json> predict_batch(const std::vector<std::string>& image_paths,
                                            bool deterministic);
  // Many images: decoded on worker threads ahead of the model, `batch` per VLM forward (1: each
  // alone, deterministic); emit receives each result in order (an unreadable image: {"image",
  // "error"}).
  void predict_stream(const std::vector<std::string>& image_paths, int batch,
                      const std::function<void(const nlohmann::json&)>& emit);
  // Decoded images (the bodies of HTTP requests, say), each capped at the bundle's size first, then
  // as predict_batch; names[i] is result i's "image".
  std::vector<nlohmann::json> predict_images(std::vector<RgbImage> images,
                                             const std::vector<std::string>& names,
                                             bool deterministic);
  const std::vector<std::string>& labels() const;
  // The bundle's VLM and processor (a server generates with the model its predictions use, on the
  // same thread), its checkpoint directory, and the long side images are capped at.
  Qwen2VLImpl& vlm();
  const Qwen2VLProcessor& processor() const;
  std::string vlm_dir() const;
  int image_cap() const;
  // What the predictions depend on: bundle.json, and the identities of the VLM checkpoint, the
  // adapter, the head and the gate files (a journal of another bundle is not reused).
  nlohmann::json identity() const;

 private:
  // Capped images through the VLM (one left-padded forward, or each alone when deterministic),
  // the head and the gate; results in the order given.
  std::vector<nlohmann::json> predict_capped(std::vector<RgbImage> images,
                                             const std::vector<std::string>& names,
                                             bool deterministic);
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace emovlm
