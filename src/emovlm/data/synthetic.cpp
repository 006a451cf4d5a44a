// The demo's synthetic affective images.
#include "emovlm/data/synthetic.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/labels.h"

namespace emovlm {

namespace {

// Per class (sorted Mikels order): hue (degrees), saturation, value, sharp shapes?, clutter, frame.
// Pairs share a colour family (the VLM's coarse view confuses them); within a pair one class has
// round soft shapes and the other sharp spiky ones (the teacher's fine view separates them), and
// the edge frame is light for one member and dark for the other (only the VLM sees it).
struct ClassStyle {
  const char* name;
  double hue, sat, val;
  bool sharp;
  int clutter;
  bool light_frame;
  const char* mood;
};
const ClassStyle kStyles[8] = {
    {"amusement", 48, 0.75, 0.95, false, 7, true, "playful"},   // warm, bright, round, busy
    {"anger", 4, 0.85, 0.55, true, 9, false, "tense"},          // red, dark, spiky, busy
    {"awe", 225, 0.55, 0.75, false, 2, true, "vast"},           // cool blue, few large round shapes
    {"contentment", 210, 0.45, 0.80, true, 3, false, "calm"},   // cool, soft light, sparse
    {"disgust", 20, 0.80, 0.50, false, 6, true, "unpleasant"},  // muddy brown-red, round blobs
    {"excitement", 38, 0.85, 0.95, true, 8, false, "energetic"},  // warm, bright, spiky, busy
    {"fear", 265, 0.35, 0.30, true, 5, true, "threatening"},      // dark, desaturated, spiky
    {"sadness", 250, 0.30, 0.35, false, 4, false, "heavy"},       // dark, desaturated, round
};

void hsv_to_rgb(double h, double s, double v, double out[3]) {
  h = std::fmod(std::fmod(h, 360.0) + 360.0, 360.0) / 60.0;
  const int i = static_cast<int>(h);
  const double f = h - i, p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  const double table[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
  for (int k = 0; k < 3; ++k) out[k] = table[i % 6][k];
}

uint8_t to8(double v) {
  return static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255));
}

}  // namespace

RgbImage synthetic_image(int cls, uint64_t seed, bool frame) {
  const ClassStyle& st = kStyles[cls];
  SplitMix64 rng(seed);
  auto jitter = [&](double amp) { return (rng.uniform() * 2 - 1) * amp; };
  const int W = 128, H = 96;
  RgbImage img(W, H);
  // background: the class colour with jitter wide enough that neighbouring families overlap
  const double hue = st.hue + jitter(18), sat = std::clamp(st.sat + jitter(0.15), 0.0, 1.0),
               val = std::clamp(st.val + jitter(0.15), 0.05, 1.0);
  double bg[3], bg2[3];
  hsv_to_rgb(hue, sat, val, bg);
  hsv_to_rgb(hue + 25, sat * 0.8, val * 0.8, bg2);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const double t = (x + y) / static_cast<double>(W + H);
      uint8_t* p = img.row(y) + 3 * x;
      for (int k = 0; k < 3; ++k) p[k] = to8(bg[k] * (1 - t) + bg2[k] * t + jitter(0.03));
    }
  // shapes: small (fine detail), round and soft or sharp and spiky, in a contrasting shade
  const int n = std::max(1, st.clutter + static_cast<int>(jitter(2)));
  double fg[3];
  hsv_to_rgb(hue + 180 + jitter(20), std::min(1.0, sat + 0.2), val > 0.5 ? val - 0.45 : val + 0.45,
             fg);
  for (int s = 0; s < n; ++s) {
    // composition: central for calm classes (few shapes), scattered otherwise
    const double spread = st.clutter <= 3 ? 0.25 : 0.45;
    const double cx = W * (0.5 + jitter(spread)), cy = H * (0.5 + jitter(spread));
    const double r = 5 + rng.uniform() * 4;
    for (int y = static_cast<int>(cy - 2 * r); y <= static_cast<int>(cy + 2 * r); ++y)
      for (int x = static_cast<int>(cx - 2 * r); x <= static_cast<int>(cx + 2 * r); ++x) {
        if (x < 0 || y < 0 || x >= W || y >= H) continue;
        const double dx = x - cx, dy = y - cy, d = std::sqrt(dx * dx + dy * dy),
                     a = std::atan2(dy, dx);
        double cover;
        if (st.sharp) {
          const double spike =
              r * (0.45 + 0.55 * std::pow(std::fabs(std::cos(2.5 * a)), 3.0));  // a 5-point star
          cover = d <= spike ? 1.0 : 0.0;
        } else {
          cover = std::clamp((r - d) / 2.5 + 0.5, 0.0, 1.0);  // soft-edged disc
        }
        if (cover <= 0) continue;
        uint8_t* p = img.row(y) + 3 * x;
        for (int k = 0; k < 3; ++k) p[k] = to8((p[k] / 255.0) * (1 - cover) + fg[k] * cover);
      }
  }
  // the edge frame (12 px left and right): light or dark by class
  if (frame) {
    const double shade = st.light_frame ? 0.92 : 0.08;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        if (x < 12 || x >= W - 12) {
          uint8_t* p = img.row(y) + 3 * x;
          p[0] = p[1] = p[2] = to8(shade + jitter(0.02));
        }
  }
  return img;
}

std::string synthetic_observation(int cls) {
  const ClassStyle& s = kStyles[cls];
  std::string colour = s.val > 0.7 ? "bright" : s.val < 0.45 ? "dark" : "muted";
  std::string sat = s.sat > 0.7 ? "saturated" : "soft";
  return "The image is " + colour + " and " + sat + ", with " + (s.clutter > 5 ? "many" : "a few") +
         " " + (s.sharp ? "sharp spiky shapes" : "round soft shapes") +
         (s.clutter <= 3 ? " near the centre." : " scattered around.");
}

std::string synthetic_reasoning(int cls) {
  const ClassStyle& s = kStyles[cls];
  return std::string("The ") + (s.val > 0.6 ? "light" : "dim") + " colours and the " +
         (s.sharp ? "sharp edges" : "rounded forms") + " give a " + s.mood +
         " feeling, so the image conveys " + s.name + ".";
}

nlohmann::json write_synthetic_dataset(const std::string& root, const SyntheticOptions& o) {
  namespace fs = std::filesystem;
  LabelSet labels = LabelSet::from_spec("mikels8");
  nlohmann::json summary = {{"root", root},
                            {"seed", o.seed},
                            {"label_noise", o.label_noise},
                            {"frame_rate", o.frame_rate}};
  int64_t noisy = 0, total = 0;
  // each split its own seed tag (the test split once took its first letter, as train does, and so
  // repeated the training images: `emovlm data check` found it)
  struct Split {
    const char* name;
    int per_class;
    uint64_t tag;
  };
  const Split splits[] = {{"train", o.train_per_class, 't'},
                          {"val", o.val_per_class, 'v'},
                          {"test", o.test_per_class, 'e'}};
  for (const auto& [split, per_class, tag] : splits) {
    for (int c = 0; c < 8; ++c) {
      for (int k = 0; k < per_class; ++k) {
        const uint64_t seed =
            mix_seed(o.seed, static_cast<uint64_t>(c) * 100003 + static_cast<uint64_t>(k), tag);
        SplitMix64 rng(seed ^ 0xABCDEF);
        const bool frame = rng.uniform() < o.frame_rate;
        int label = c;
        if (rng.uniform() < o.label_noise) {
          label = static_cast<int>(rng.below(8));
          if (label != c) ++noisy;
        }
        RgbImage img = synthetic_image(c, seed, frame);
        const std::string dir = root + "/" + split + "/" + labels.labels[label];
        fs::create_directories(dir);
        char name[64];
        std::snprintf(name, sizeof name, "%s-%04d.jpg", labels.labels[c].c_str(), k);
        write_image_file(dir + "/" + name, img, o.jpeg_quality);
        ++total;
      }
    }
    summary["splits"][split] = per_class * 8;
  }
  summary["images"] = total;
  summary["noisy_labels"] = noisy;
  return summary;
}

}  // namespace emovlm
