// Stage 1: supervised instruction tuning of Qwen2-VL on emotion instructions (categorical,
// observation, reasoning), with the reference's label masking (pad and vision tokens set to
// -100; the prompt is not masked unless mask_prompt). Full fine-tuning here; LoRA/QLoRA adapters
// hook in through the same loss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/data/dataset.h"
#include "emovlm/models/lora.h"
#include "emovlm/models/qwen2vl_generate.h"
#include "emovlm/train/trainer.h"

namespace emovlm {

// One line of an instruction JSONL file.
struct InstructionExample {
  std::string image;   // path
  std::string label;   // the true emotion
  std::string kind;    // categorical | observation | reasoning
  std::string prompt;  // the user's text (the image follows it)
  std::string answer;  // the assistant's answer
};

std::vector<InstructionExample> read_instructions(const std::string& jsonl);
void write_instructions(const std::string& jsonl, const std::vector<InstructionExample>& examples);
// The categorical example of every image of a split (no endpoint needed).
std::vector<InstructionExample> categorical_examples(const std::vector<Sample>& samples, const LabelSet& labels);

// The reference's instruction prompts.
constexpr const char* kObservationPrompt =
    "Observe the image and describe key elements of the image. Focus on the elements that convey emotion.";
constexpr const char* kReasoningPrompt =
    "Observe the image and describe the process of inferring the emotions conveyed in the image.";

struct SftTokens {
  Qwen2VLInputs inputs;  // one sequence
  torch::Tensor labels;  // [1, T]: input ids, -100 where masked
};

// Renders (system, user: prompt + image, assistant: answer), tokenizes and masks.
SftTokens build_sft_tokens(const Qwen2VLProcessor& processor, const Qwen2VLConfig& config, const InstructionExample& ex,
                           const RgbImage& image, bool mask_prompt);
// Labels of a token sequence: pad, vision start/end and image pads masked (-100); with
// mask_prompt also everything up to and including the last "<|im_start|>assistant\n".
torch::Tensor sft_labels(const torch::Tensor& input_ids, const Qwen2VLConfig& config, int32_t pad_id,
                         const std::vector<int32_t>& assistant_header, bool mask_prompt);
// Mean cross-entropy of next-token prediction over the unmasked labels (shifted by one).
torch::Tensor sft_loss(Qwen2VLImpl& model, const Qwen2VLInputs& inputs, const torch::Tensor& labels);

struct SftOptions {
  std::string vlm, instructions, out;
  bool full = true;          // train every weight (the demo: a VLM from scratch); else LoRA adapters
  LoraConfig lora;           // r=8, alpha=8, dropout 0.05 on q/k/v/o_proj (the reference)
  bool qlora = false;        // the frozen base's Linear layers (all but lm_head) in NF4
  bool double_quant = true;  // with --qlora, as the reference's BitsAndBytesConfig
  bool mask_prompt = false;  // train on answers only
  int64_t epochs = 5;
  int cap_long_side = 1024;
  uint64_t seed = 0;
  bool resume = false;
  std::string dtype = "f32";          // of the base weights (bf16: the reference's compute dtype)
  std::string device = "auto";        // cpu, cuda[:N] or auto
  std::string autocast = "none";      // bf16: mixed precision over float32 weights (full tuning)
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

// Writes a Qwen2-VL checkpoint directory: config.json, model.safetensors (Hub names) and the
// tokenizer/processor files copied from `assets_dir`.
void save_qwen2vl(const std::string& dir, Qwen2VLImpl& model, const std::string& assets_dir);

// The VLM of a checkpoint directory with an optional PEFT adapter merged into its weights.
Qwen2VL load_vlm(const std::string& dir, const std::string& adapter, torch::ScalarType dtype, torch::Device device);

}  // namespace emovlm
