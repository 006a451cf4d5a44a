// `emovlm chat` (stream an answer about an image) and `emovlm classify` (label scores or the
// reference's generate-and-parse) on a Qwen2-VL checkpoint directory.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/image/resample.h"
#include "emovlm/models/qwen2vl_generate.h"
#include "emovlm/pipeline/classify.h"
#include "emovlm/text/chat.h"
#include "emovlm/train/sft.h"

namespace emovlm::cli {

namespace {

struct VlmArgs {
  std::string model, adapter, dtype = "bf16", device = "auto";
  bool cuda_graph = false;
  Qwen2VL load() const {
    return load_vlm(model, adapter, parse_dtype(dtype), parse_device(device));
  }
};

// --model, --adapter, --dtype, --device, --cuda-graph (chat's VlmArgs, classify's ClassifyOptions)
void add_vlm_flags(CLI::App* cmd, std::string& model, std::string& adapter, std::string& dtype,
                   std::string& device, bool& cuda_graph) {
  cmd->add_option("--model", model,
                  "Qwen2-VL checkpoint directory (config.json, safetensors, tokenizer.json)")
      ->required();
  cmd->add_option(
      "--adapter", adapter,
      "a PEFT LoRA adapter directory (`emovlm tune`'s output), merged into the weights");
  cmd->add_option("--dtype", dtype, "compute dtype: bf16, f16 or f32")->capture_default_str();
  cmd->add_option("--device", device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_flag("--cuda-graph", cuda_graph,
                "decode with fixed shapes, replayed as one CUDA graph per token on a GPU (same "
                "tokens, less launch overhead)");
}

struct ChatArgs {
  VlmArgs vlm;
  std::string image, prompt = "Describe this image.", system;
  int max_new_tokens = 256;
  double temperature = 0;
  uint64_t seed = 0;
};

void run_chat(const ChatArgs& a) {
  Qwen2VL model = a.vlm.load();
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(a.vlm.model);
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
  caller.cuda_graph = a.vlm.cuda_graph;
  GenerationConfig g = GenerationConfig::merge(GenerationConfig::from_dir(a.vlm.model), caller);
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

struct ClassifyArgs {
  ClassifyOptions o;
  std::vector<std::string> images;
  SplitArgs split;  // --data: the VLM evaluated on a labelled split
  bool as_json = false;
};

void print_scores(const json& r, const std::vector<std::string>& labels) {
  std::printf("%s: %s\n", r["image"].get<std::string>().c_str(),
              r["label"].is_null() ? "(unparsable answer)" : r["label"].get<std::string>().c_str());
  if (r.contains("probabilities"))
    for (const auto& l : labels)
      std::printf("  %-12s %.4f\n", l.c_str(), r["probabilities"][l].get<double>());
  if (r.contains("answer")) std::printf("  answer: %s\n", r["answer"].get<std::string>().c_str());
  std::fflush(stdout);
}

void run_classify(const ClassifyArgs& a) {
  const bool on_split = a.split.chosen(a.images, "classify");
  VlmClassifier classifier(a.o);
  const std::vector<std::string>& labels = classifier.labels().labels;
  if (on_split) {
    run_split_report(a.split, a.as_json,
                     [&](const auto& on_result, const std::string& journal) {
                       return evaluate_vlm(classifier, a.split.data, a.split.split, a.split.dataset,
                                           on_result, journal);
                     },
                     {{"VLM", "/metrics"}});
    return;
  }
  json all = json::array();
  const std::vector<std::string> images = image_arguments(a.images);
  size_t failed = 0;
  classifier.classify(images, [&](const json& r) {
    if (r.contains(
            "error")) {  // an unreadable image: said in its place, and the others still classified
      ++failed;
      report_image_error(r["image"], r["error"], a.as_json, all);
    } else if (a.as_json) {
      all.push_back(r);
    } else {
      print_scores(r, labels);
    }
  });
  if (a.as_json) std::cout << all.dump(1) << std::endl;
  if (failed)
    throw Error(cat(failed, " of ", images.size(), " images could not be classified (see above)"));
}

}  // namespace

void add_vlm_commands(CLI::App& app) {
  auto c = std::make_shared<ChatArgs>();
  CLI::App* chat = app.add_subcommand("chat", "Ask the VLM about an image and stream its answer");
  add_vlm_flags(chat, c->vlm.model, c->vlm.adapter, c->vlm.dtype, c->vlm.device, c->vlm.cuda_graph);
  chat->add_option("--image", c->image,
                   "an image file: JPEG, PNG, GIF, BMP, WebP (omit for text only)");
  chat->add_option("--prompt", c->prompt, "the user message")->capture_default_str();
  chat->add_option("--system", c->system, "a system message (default: the model's)");
  chat->add_option("--max-new-tokens", c->max_new_tokens, "")->capture_default_str();
  chat->add_option("--temperature", c->temperature, "sample with this temperature (0: greedy)")
      ->capture_default_str();
  chat->add_option("--seed", c->seed, "sampling seed")->capture_default_str();
  chat->callback([c] { run_chat(*c); });

  auto k = std::make_shared<ClassifyArgs>();
  CLI::App* cls = app.add_subcommand(
      "classify", "Emotion of each image from the VLM: label scores or generate-and-parse");
  add_vlm_flags(cls, k->o.vlm, k->o.adapter, k->o.dtype, k->o.device, k->o.cuda_graph);
  cls->add_option("images", k->images,
                  "image files (JPEG, PNG, GIF, BMP, WebP) or directories of them");
  add_split_flags(cls, k->split, "accuracy, macro-F1, per class");
  cls->add_option("--labels", k->o.labels, "mikels8, ekman6, binary or a,b,c")
      ->capture_default_str();
  cls->add_option(
         "--mode", k->o.mode,
         "score (deterministic label scores) or generate (the reference's sampling + parsing)")
      ->capture_default_str();
  cls->add_option("--temperature", k->o.temperature,
                  "generate mode: temperature (merged with generation_config.json)")
      ->capture_default_str();
  cls->add_option("--max-new-tokens", k->o.max_new_tokens, "generate mode")->capture_default_str();
  cls->add_option("--seed", k->o.seed, "generate mode: sampling seed")->capture_default_str();
  cls->add_option("--batch", k->o.batch,
                  "score mode: images per VLM forward (1: each alone, independent of the others; "
                  "more: faster on a "
                  "GPU, equal to float rounding)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cls->add_flag("--json", k->as_json, "print JSON");
  cls->callback([k] { run_classify(*k); });
}

}  // namespace emovlm::cli
