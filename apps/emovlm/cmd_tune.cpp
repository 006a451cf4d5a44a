// `emovlm tune`: stage 1, instruction-tuning the VLM: every weight, LoRA adapters on a frozen
// base, or LoRA on a 4-bit (NF4) base (QLoRA).
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/train/sft.h"

namespace emovlm::cli {

void add_tune_command(CLI::App& app) {
  auto s = std::make_shared<SftOptions>();
  auto lora = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("tune", "Stage 1: instruction-tune the VLM");
  add_vlm_flag(cmd, s->vlm);
  cmd->add_option("--instructions", s->instructions,
                  "instruction JSONL (`emovlm instruct`, or the demo's)")
      ->required()
      ->group(kDataGroup);
  add_out_flag(cmd, s->out,
               "the tuned checkpoint's folder (--full) or the PEFT adapter's (--lora, --qlora)");
  // --full names the default: SftOptions::full is already true, and --lora/--qlora clear it
  CLI::Option* f = cmd->add_flag("--full", s->full, "tune every weight (the default)")
                       ->disable_flag_override();  // no --full=false: --lora or --qlora say that
  CLI::Option* l = cmd->add_flag("--lora", *lora,
                                 "train LoRA adapters on a frozen base (written in PEFT's format)");
  CLI::Option* q = cmd->add_flag("--qlora", s->qlora,
                                 "LoRA adapters on a 4-bit (NF4, double-quantized) frozen base");
  f->excludes(l)->excludes(q);
  l->excludes(q);
  cmd->add_option("--lora-r", s->lora.r, "the adapters' rank")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group("LoRA");
  cmd->add_option("--lora-alpha", s->lora.alpha, "the adapters' scale is alpha / r")
      ->capture_default_str()
      ->group("LoRA");
  cmd->add_option("--lora-dropout", s->lora.dropout, "dropout on the adapters' input")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.999))
      ->group("LoRA");
  cmd->add_option("--target-modules", s->lora.target_modules,
                  "the Linear layers that get adapters, by name")
      ->capture_default_str()
      ->group("LoRA");
  cmd->add_flag("--mask-prompt", s->mask_prompt,
                "train on the answers only (the prompt's tokens carry no loss)");
  add_epochs_flag(cmd, s->epochs);
  add_seed_flag(cmd, s->seed, "the adapters' initialisation and the order of the examples");
  add_run_flags(cmd, s->resume, s->overwrite, s->save_every_steps);
  add_optim_flags(cmd, s->optim);
  add_dtype_flag(cmd, s->dtype,
                 "the base's weights: f32, or bf16 (the reference's compute dtype; less memory)",
                 "--dtype", false);
  add_device_flag(cmd, s->device);
  add_autocast_flag(cmd, s->autocast);
  cmd->add_flag("--gradient-checkpointing", s->gradient_checkpointing,
                "recompute each decoder layer's activations in backward (less memory)")
      ->group(kDeviceGroup);
  add_workers_flag(cmd, s->workers);
  cmd->callback([s, lora] {
    if (*lora || s->qlora) s->full = false;
    std::cout << train_sft(*s).dump(1) << std::endl;
  });
}

}  // namespace emovlm::cli
