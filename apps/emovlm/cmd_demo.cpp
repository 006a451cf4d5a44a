// `emovlm demo` (the whole pipeline on built-in data) and `emovlm tune` (stage 1).
#include <iostream>
#include <memory>

#include "commands.h"
#include "emovlm/pipeline/demo.h"
#include "emovlm/train/sft.h"

namespace emovlm::cli {

void add_demo_commands(CLI::App& app) {
  struct MergeArgs {
    std::string vlm, adapter, out;
  };
  auto m = std::make_shared<MergeArgs>();
  CLI::App* lora_cmd = app.add_subcommand("lora", "LoRA adapter tools");
  lora_cmd->require_subcommand(1);
  CLI::App* merge = lora_cmd->add_subcommand(
      "merge", "Write a checkpoint with a PEFT adapter merged into the weights");
  merge->add_option("--vlm", m->vlm, "base checkpoint directory")->required();
  merge->add_option("--adapter", m->adapter, "PEFT adapter directory")->required();
  merge->add_option("--out", m->out, "output checkpoint directory")->required();
  merge->callback([m] {
    Qwen2VL model = load_vlm(m->vlm, m->adapter, torch::kFloat32, torch::kCPU);
    save_qwen2vl(m->out, *model, m->vlm);
    std::printf("wrote %s\n", m->out.c_str());
  });

  auto d = std::make_shared<DemoOptions>();
  CLI::App* demo =
      app.add_subcommand("demo", "Run every stage of EmoVLM-KD on built-in data with tiny models");
  demo->add_option("--out", d->out, "output directory")->capture_default_str();
  demo->add_flag("--quick", d->quick, "fewer images and epochs");
  demo->add_option("--seed", d->seed, "")->capture_default_str();
  demo->callback([d] { run_demo(*d); });

  auto s = std::make_shared<SftOptions>();
  auto lora = std::make_shared<bool>(false);
  CLI::App* tune = app.add_subcommand("tune", "Stage 1: instruction-tune the VLM");
  tune->add_option("--vlm", s->vlm, "Qwen2-VL checkpoint directory")->required();
  tune->add_option("--instructions", s->instructions,
                   "instruction JSONL (emovlm instruct / the demo)")
      ->required();
  tune->add_option("--out", s->out, "output directory")->required();
  tune->add_flag("--full", s->full, "tune every weight (default)");
  tune->add_flag("--lora", *lora,
                 "train LoRA adapters on a frozen base (written in PEFT's format)");
  tune->add_flag("--qlora", s->qlora, "LoRA on a 4-bit (NF4, double-quantized) frozen base");
  tune->add_option("--lora-r", s->lora.r, "")->capture_default_str();
  tune->add_option("--lora-alpha", s->lora.alpha, "")->capture_default_str();
  tune->add_option("--lora-dropout", s->lora.dropout, "")->capture_default_str();
  tune->add_option("--target-modules", s->lora.target_modules, "")->capture_default_str();
  tune->add_flag("--mask-prompt", s->mask_prompt, "train on the answers only");
  tune->add_option("--epochs", s->epochs, "")->capture_default_str();
  tune->add_option("--dtype", s->dtype, "f32 or bf16 (the base's weights)")->capture_default_str();
  tune->add_option("--device", s->device, "cpu, cuda[:N] or auto")->capture_default_str();
  tune->add_option("--autocast", s->autocast, "none or bf16 (mixed precision over float32 weights)")
      ->capture_default_str();
  tune->add_flag("--gradient-checkpointing", s->gradient_checkpointing,
                 "recompute activations in backward (less memory)");
  tune->add_option("--lr", s->optim.lr, "")->capture_default_str();
  tune->add_option("--max-grad-norm", s->optim.max_grad_norm, "")->capture_default_str();
  tune->add_option("--warmup-ratio", s->optim.warmup_ratio, "")->capture_default_str();
  tune->add_option("--grad-accum", s->optim.grad_accum, "")->capture_default_str();
  tune->add_option("--seed", s->seed, "")->capture_default_str();
  tune->add_flag("--resume", s->resume, "continue the run in --out");
  tune->add_flag("--overwrite", s->overwrite, "start over in an --out that holds a run");
  tune->add_option("--save-every", s->save_every_steps,
                   "also checkpoint every N optimizer steps (0: each epoch)")
      ->capture_default_str();
  tune->callback([s, lora] {
    if (*lora || s->qlora) s->full = false;
    std::cout << train_sft(*s).dump(1) << std::endl;
  });
}

}  // namespace emovlm::cli
