// `emovlm distill`: stage 2, the distillation head trained from a feature cache (KL to the
// teacher's logits + cross-entropy on the labels).
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/train/distill.h"

namespace emovlm::cli {

namespace {

// "1024,512" -> {1024, 512}
std::vector<int64_t> parse_hidden(const std::string& s) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t c = s.find(',', pos);
    const std::string part = s.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
    try {
      size_t used = 0;
      out.push_back(std::stoll(part, &used));
      if (used != part.size() || out.back() <= 0) throw std::invalid_argument(part);
    } catch (const std::exception&) {
      throw Error(cat("--hidden: '", part, "' is not a positive size (e.g. 1024 or 1024,512)"));
    }
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  if (out.empty()) throw Error("--hidden needs at least one size (e.g. 1024 or 1024,512)");
  return out;
}

}  // namespace

void add_distill_command(CLI::App& app) {
  auto d = std::make_shared<DistillOptions>();
  auto hidden = std::make_shared<std::string>("1024");
  CLI::App* cmd =
      app.add_subcommand("distill", "Stage 2: train the distillation head from a cache");
  add_cache_flags(cmd, d->cache, d->val_cache,
                  "the best epoch is kept, and early stopping (without it: the last epoch)");
  add_out_flag(cmd, d->out, "the head's folder (weights, classes.json, metrics, report)");
  cmd->add_option("--hidden", *hidden, "hidden layer sizes, e.g. 1024 or 1024,512")
      ->capture_default_str();
  cmd->add_option("--alpha", d->alpha, "weight of the KL term (1 - alpha: cross-entropy)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--temperature", d->temperature, "distillation temperature")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--dropout", d->dropout, "dropout after each hidden layer")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999));
  add_budget_flags(cmd, d->epochs, d->min_steps, d->patience);
  add_batch_size_flag(cmd, d->batch_size, "cached images per batch (the reference code uses 1)");
  add_seed_flag(cmd, d->seed, "initialisation, dropout and the order of the batches");
  add_run_flags(cmd, d->resume, d->overwrite, d->save_every_steps);
  add_optim_flags(cmd, d->optim);
  add_dtype_flag(cmd, d->compute_dtype, "the matmuls' dtype: bf16 or f32 (weights stay float32)",
                 "--compute-dtype", false);
  add_device_flag(cmd, d->device);
  cmd->callback([d, hidden] {
    d->hidden = parse_hidden(*hidden);
    std::cout << train_distill_head(*d).dump(1) << std::endl;
  });
}

}  // namespace emovlm::cli
