// The teacher: fine-tune an ImageNet checkpoint (a Hugging Face ViT, or a timm ResNet or VGG: the
// paper's Table 1 baselines) on an emotion dataset with a new classification layer (the reference's
// defaults for all three: Adam, lr 3e-5, weight decay 1e-5, batch 10, 10 epochs, RandomResizedCrop
// + flip); and predict_all, the teacher over a list of images, which its validation and
// evaluate_teacher (pipeline/evaluate.h) share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/core/device.h"
#include "emovlm/data/dataset.h"
#include "emovlm/image/preprocess.h"
#include "emovlm/train/trainer.h"

namespace emovlm {

class ImageClassifierImpl;

struct TeacherOptions {
  std::string data, init, out;
  DatasetOptions dataset;
  // The architecture --init must hold (vit, resnet50, vgg16, vgg16_bn, ...; classifier_archs());
  // empty: whichever it holds.
  std::string arch;
  // The input transform. "reference" (the default): the reference script's, which trains all three
  // architectures alike: Resize(S) + CenterCrop(S), mean = std = 0.5, S = 384 for a ResNet or VGG
  // (the ViT's own size for the ViT). "checkpoint": the checkpoint's own (a ResNet's or VGG's timm
  // pretrained_cfg: shorter side to size / crop_pct, center crop, ImageNet mean/std; the same as
  // "reference" for the ViT).
  std::string preprocess = "reference";
  int64_t epochs = 10, batch_size = 10;
  int image_size = 0;  // 0: the transform's size
  int workers = 2;
  uint64_t seed = 0;
  bool resume = false;            // continue the run in `out`
  bool overwrite = false;         // start over in an `out` that holds a run
  int64_t save_every_steps = 0;   // also checkpoint every N optimizer steps (0: each epoch)
  ComputeDevice device;           // auto
  std::string autocast = "none";  // bf16: mixed precision (float32 master weights)
  OptimConfig optim = [] {
    OptimConfig o;
    o.lr = 3e-5;
    o.weight_decay = 1e-5;
    return o;
  }();
};

// Trains and writes OUT/{config.json, model.safetensors (best validation epoch), classes.json,
// metrics.jsonl, checkpoint.safetensors, report.json} in the --init checkpoint's layout, with the
// transform it was trained with (a ViT's preprocessor_config.json; a ResNet's or VGG's config.json
// pretrained_cfg). Returns the report.
nlohmann::json train_teacher(const TeacherOptions& options);

// The teacher's class for each sample (its eval transform, in batches of `batch` decoded by
// `workers` threads, with a progress bar named `label`), in the order of the readable samples;
// truth (optional): their labels; failures (optional): one message per unreadable image.
std::vector<int> predict_all(ImageClassifierImpl& model, const std::vector<Sample>& samples,
                             const VitImageConfig& image, int64_t batch, int workers,
                             std::vector<int>* truth, std::vector<std::string>* failures,
                             const std::string& label);

}  // namespace emovlm
