// `emovlm lora merge`: a Qwen2-VL checkpoint with a PEFT adapter merged into its weights.
#include <cstdio>
#include <memory>

#include "commands.h"
#include "emovlm/models/qwen2vl.h"

namespace emovlm::cli {

void add_lora_command(CLI::App& app) {
  struct MergeArgs {
    std::string vlm, adapter, out;
  };
  auto m = std::make_shared<MergeArgs>();
  CLI::App* lora = app.add_subcommand("lora", "LoRA adapter tools");
  lora->require_subcommand(1);
  CLI::App* merge = lora->add_subcommand(
      "merge", "Write a checkpoint with a PEFT adapter merged into the weights");
  add_vlm_flag(merge, m->vlm);
  add_adapter_flag(merge, m->adapter, true);
  add_out_flag(merge, m->out, "the merged checkpoint's folder");
  merge->callback([m] {
    Qwen2VL model(Qwen2VLImpl::from_pretrained(m->vlm, m->adapter, torch::kFloat32, torch::kCPU));
    model->save_pretrained(m->out, m->vlm);
    std::printf("wrote %s\n", m->out.c_str());
  });
}

}  // namespace emovlm::cli
