// Stage 1: supervised instruction tuning of Qwen2-VL on emotion instructions (categorical,
// observation, reasoning), with the reference's label masking (pad and vision tokens set to
// -100; the prompt is not masked unless mask_prompt). Full fine-tuning here; LoRA/QLoRA adapters
// hook in through the same loss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/core/device.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/instruction_format.h"
#include "emovlm/models/lora.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/train/trainer.h"

namespace emovlm {

struct SftTokens {
  Qwen2VLInputs inputs;  // one sequence
  torch::Tensor labels;  // [1, T]: input ids, -100 where masked
};

// Renders (system, user: prompt + image, assistant: answer), tokenizes and masks.
SftTokens build_sft_tokens(const Qwen2VLProcessor& processor, const Qwen2VLConfig& config,
                           const InstructionExample& ex, const RgbImage& image, bool mask_prompt);
// Labels of a token sequence: pad, vision start/end and image pads masked (-100); with
// mask_prompt also everything up to and including the last "<|im_start|>assistant\n".
torch::Tensor sft_labels(const torch::Tensor& input_ids, const Qwen2VLConfig& config,
                         int32_t pad_id, const std::vector<int32_t>& assistant_header,
                         bool mask_prompt);
// Mean cross-entropy of next-token prediction over the unmasked labels (shifted by one).
torch::Tensor sft_loss(Qwen2VLImpl& model, const Qwen2VLInputs& inputs,
                       const torch::Tensor& labels);

struct SftOptions {
  std::string vlm, instructions, out;
  bool full = true;    // train every weight (the demo: a VLM from scratch); else LoRA adapters
  LoraConfig lora;     // r=8, alpha=8, dropout 0.05 on q/k/v/o_proj (the reference)
  bool qlora = false;  // the frozen base's Linear layers (all but lm_head) in NF4
  bool double_quant = true;  // with --qlora, as the reference's BitsAndBytesConfig
  bool mask_prompt = false;  // train on answers only
  int64_t epochs = 5;
  int cap_long_side = 1024;
  uint64_t seed = 0;
  bool resume = false;           // continue the run in `out`
  bool overwrite = false;        // start over in an `out` that holds a run
  int64_t save_every_steps = 0;  // also checkpoint every N optimizer steps (0: each epoch)
  int workers = 2;               // threads decoding and tokenizing the next examples
  ComputeDtype dtype = ComputeDtype::f32;  // of the base weights (bf16: the reference's)
  ComputeDevice device;                    // auto
  std::string autocast = "none";        // bf16: mixed precision over float32 weights (full tuning)
  bool gradient_checkpointing = false;  // recompute each decoder layer in backward (less memory)
  OptimConfig optim = [] {
    OptimConfig o;
    o.optimizer = "adamw";
    o.lr = 1e-4;
    o.schedule = "warmup";
    o.warmup_ratio = 0.03;
    o.max_grad_norm = 0.3;
    return o;
  }();
};

// Tunes and writes OUT: a checkpoint directory (config, weights, tokenizer, processor files) when
// full, else a PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
nlohmann::json train_sft(const SftOptions& options);

}  // namespace emovlm
