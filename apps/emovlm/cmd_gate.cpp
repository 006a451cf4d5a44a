// `emovlm gate`: stage 3, the gate that fuses the VLM's answer with the head's logits, trained
// from a feature cache and a distillation head.
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/train/distill.h"

namespace emovlm::cli {

void add_gate_command(CLI::App& app) {
  auto g = std::make_shared<GateOptions>();
  CLI::App* cmd =
      app.add_subcommand("gate", "Stage 3: train the gate from a cache and a distillation head");
  add_cache_flags(cmd, g->cache, g->val_cache,
                  "the best epoch is kept, early stopping, and --fit-on val");
  add_distill_flag(cmd, g->distill);
  add_out_flag(cmd, g->out, "the gate's folder (weights, metrics, report)");
  std::vector<std::string> kinds = gate_kinds();
  cmd->add_option("--kind,--gate", g->kind, "the gate: concat, moe, bilinear, dynamic or cross")
      ->capture_default_str()
      ->check(CLI::IsMember(kinds));
  cmd->add_option("--vlm-input", g->vlm_input,
                  "what the gate reads of the VLM: onehot (its answer, the paper) or scores (its "
                  "label scores)")
      ->capture_default_str()
      ->check(CLI::IsMember({"onehot", "scores"}));
  cmd->add_option("--fit-on", g->fit_on,
                  "what the gate learns from: train (the paper: the training cache, which the head "
                  "and the VLM have seen), val (the validation cache) or crossfit (the training "
                  "cache with out-of-fold head outputs)")
      ->capture_default_str()
      ->check(CLI::IsMember(gate_fit_ons()));
  cmd->add_option("--folds", g->folds, "crossfit: heads trained, each on all folds but one")
      ->capture_default_str()
      ->check(at_least(2));
  cmd->add_option("--init", g->init,
                  "average (start as a weighted average of the inputs' log-probabilities, weights "
                  "fit on the fit data) or random (PyTorch's default, as the reference)")
      ->capture_default_str()
      ->check(CLI::IsMember({"average", "random"}));
  add_budget_flags(cmd, g->epochs, g->min_steps, g->patience);
  add_batch_size_flag(cmd, g->batch_size, "cached images per batch");
  add_seed_flag(cmd, g->seed, "initialisation, the folds and the order of the batches");
  add_run_flags(cmd, g->resume, g->overwrite, g->save_every_steps);
  add_optim_flags(cmd, g->optim);
  add_device_flag(cmd, g->device);
  cmd->callback([g] { std::cout << train_gate(*g).dump(1) << std::endl; });
}

}  // namespace emovlm::cli
