// A seeded generator of a small affective-image dataset for the demo: 8 classes named as Mikels'
// emotions, drawn from cues psychology ties to emotion (hue, brightness, saturation, contrast,
// shape sharpness, clutter, composition), with label noise and overlapping classes. Coarse cues
// (colour, brightness) survive the VLM's downsampling; fine cues (sharp vs round shapes) need
// the teacher's resolution; a frame at the left and right edges is seen by the VLM (which sees the
// whole image) but cropped away by the teacher's centre crop. So the two views can disagree.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/image/image.h"

namespace emovlm {

struct SyntheticOptions {
  int train_per_class = 30, val_per_class = 6, test_per_class = 10;
  int width = 128, height = 96;
  double label_noise = 0.08;  // share of images whose label is replaced by a random one
  double frame_rate = 0.7;    // share of images that carry the edge frame cue
  uint64_t seed = 1;
  int jpeg_quality = 90;
};

// Draws image `index` of class `cls` (0..7 in sorted Mikels order); `frame` adds the edge cue.
RgbImage synthetic_image(int cls, uint64_t seed, bool frame);

// A short description of the cues in an image of class cls (for the templated instructions).
std::string synthetic_observation(int cls);
std::string synthetic_reasoning(int cls);

// Writes ROOT/{train,val,test}/<emotion>/NNNN.jpg; returns a summary (counts, noisy labels).
nlohmann::json write_synthetic_dataset(const std::string& root, const SyntheticOptions& options);

}  // namespace emovlm
