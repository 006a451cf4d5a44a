// `emovlm chat`: ask a Qwen2-VL checkpoint about an image and stream its answer.
#include <iostream>
#include <memory>

#include "commands.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/image/resample.h"
#include "emovlm/models/qwen2vl_generation.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/pipeline/emotion_query.h"
#include "emovlm/text/chat.h"

namespace emovlm::cli {

namespace {

struct ChatArgs {
  std::string vlm, adapter;
  ComputeDtype dtype = ComputeDtype::bf16;
  ComputeDevice device;  // auto
  bool cuda_graph = false;
  std::string image, prompt = "Describe this image.", system;
  int max_new_tokens = 256;
  double temperature = 0;
  uint64_t seed = 0;
};

void run_chat(const ChatArgs& a) {
  Qwen2VL model(
      Qwen2VLImpl::from_pretrained(a.vlm, a.adapter, to_torch(a.dtype), to_torch(a.device)));
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(a.vlm);
  std::vector<ChatMessage> msgs;
  if (!a.system.empty()) msgs.push_back(ChatMessage::text("system", a.system));
  msgs.push_back(a.image.empty() ? ChatMessage::text("user", a.prompt)
                                 : ChatMessage::text_then_image("user", a.prompt));
  VlmPrompt p{render_chat(msgs, true), {}};
  if (!a.image.empty()) p.images.push_back(cap_long_side(decode_image_file(a.image), 1024));
  GenerationConfig caller;
  caller.max_new_tokens = a.max_new_tokens;
  if (a.temperature > 0) {
    caller.do_sample = true;
    caller.temperature = a.temperature;
  } else {
    caller.do_sample = false;
  }
  caller.seed = prompt_seed(a.seed, p.images);  // as classify and extract draw an image's answer
  caller.cuda_graph = a.cuda_graph;
  GenerationConfig g = GenerationConfig::merge(GenerationConfig::from_dir(a.vlm), caller);
  if (g.eos_token_ids.empty()) g.eos_token_ids = {model->config().eos_token_id};
  const Tokenizer& tok = proc.tokenizer();
  std::vector<int32_t> pending;
  std::string printed;
  generate(*model, proc.build({p}), g, [&](int64_t, int64_t t) {
    // decode the whole answer so far and print what is new (multi-byte characters span tokens)
    pending.push_back(static_cast<int32_t>(t));
    std::string text = tok.decode(pending, true);
    if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0 &&
        text.find("\xEF\xBF\xBD", printed.size()) == std::string::npos) {
      std::cout << text.substr(printed.size()) << std::flush;
      printed = text;
    }
  });
  std::string final_text = tok.decode(pending, true);
  if (final_text.size() > printed.size()) std::cout << final_text.substr(printed.size());
  std::cout << std::endl;
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto c = std::make_shared<ChatArgs>();
  CLI::App* cmd = app.add_subcommand("chat", "Ask the VLM about an image and stream its answer");
  add_vlm_flag(cmd, c->vlm);
  add_adapter_flag(cmd, c->adapter);
  cmd->add_option("--image", c->image,
                  "an image file: JPEG, PNG, GIF, BMP, WebP (default: none, text only)");
  cmd->add_option("--prompt", c->prompt, "the user message")->capture_default_str();
  cmd->add_option("--system", c->system, "a system message (default: the model's)");
  cmd->add_option("--max-new-tokens", c->max_new_tokens, "the longest answer, in tokens")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", c->temperature, "sample with this temperature (0: greedy)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  add_seed_flag(cmd, c->seed, "sampling seed (mixed with the image's pixels)", "Sampling");
  add_dtype_flag(cmd, c->dtype, "compute dtype: bf16, f16 or f32");
  add_device_flag(cmd, c->device);
  add_cuda_graph_flag(cmd, c->cuda_graph);
  cmd->callback([c] { run_chat(*c); });
}

}  // namespace emovlm::cli
