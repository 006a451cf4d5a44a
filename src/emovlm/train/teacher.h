// The ViT teacher: fine-tune a Hugging Face ViT checkpoint on an emotion dataset (the reference's
// defaults: Adam, lr 3e-5, weight decay 1e-5, batch 10, 10 epochs, 384 px, RandomResizedCrop +
// flip), and evaluate it.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/data/dataset.h"
#include "emovlm/train/trainer.h"

namespace emovlm {

struct TeacherOptions {
  std::string data, init, out;
  DatasetOptions dataset;
  int64_t epochs = 10, batch_size = 10;
  int image_size = 0;  // 0: the checkpoint's image_size
  int workers = 2;
  uint64_t seed = 0;
  bool resume = false;             // continue the run in `out`
  bool overwrite = false;          // start over in an `out` that holds a run
  int64_t save_every_steps = 0;    // also checkpoint every N optimizer steps (0: each epoch)
  std::string device = "auto";    // cpu, cuda[:N] or auto
  std::string autocast = "none";  // bf16: mixed precision (float32 master weights)
  OptimConfig optim = [] {
    OptimConfig o;
    o.lr = 3e-5;
    o.weight_decay = 1e-5;
    return o;
  }();
};

// Trains and writes OUT/{config.json, model.safetensors (best validation epoch), classes.json,
// preprocessor_config.json, metrics.jsonl, checkpoint.safetensors, report.json}. Returns the report.
nlohmann::json train_teacher(const TeacherOptions& options);

// Accuracy and the rest on one split of a dataset with a trained teacher directory.
nlohmann::json eval_teacher(const std::string& teacher_dir, const std::string& data, const std::string& split,
                            const DatasetOptions& dataset, int64_t batch_size = 32, int workers = 2,
                            const std::string& device = "auto");

// The classes a trained teacher (or head, gate) directory was trained on (classes.json).
std::vector<std::string> read_classes(const std::string& dir);
void write_classes(const std::string& dir, const LabelSet& labels);

}  // namespace emovlm
