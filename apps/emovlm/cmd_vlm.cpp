// `emovlm chat` (stream an answer about an image) and `emovlm classify` (label scores or the
// reference's generate-and-parse) on a Qwen2-VL checkpoint directory.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/image/resample.h"
#include "emovlm/data/labels.h"
#include "emovlm/data/loader.h"
#include "emovlm/models/qwen2vl_generate.h"
#include "emovlm/text/chat.h"
#include "emovlm/train/sft.h"

namespace emovlm::cli {

namespace {


struct VlmArgs {
  std::string model, adapter, dtype = "bf16", device = "auto";
  bool cuda_graph = false;
  Qwen2VL load() const { return load_vlm(model, adapter, parse_dtype(dtype), parse_device(device)); }
};

void add_vlm_flags(CLI::App* cmd, VlmArgs& a) {
  cmd->add_option("--model", a.model, "Qwen2-VL checkpoint directory (config.json, safetensors, tokenizer.json)")->required();
  cmd->add_option("--adapter", a.adapter, "a PEFT LoRA adapter directory (`emovlm tune`'s output), merged into the weights");
  cmd->add_option("--dtype", a.dtype, "compute dtype: bf16, f16 or f32")->capture_default_str();
  cmd->add_option("--device", a.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_flag("--cuda-graph", a.cuda_graph,
                "decode with fixed shapes, replayed as one CUDA graph per token on a GPU (same tokens, less launch overhead)");
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
  msgs.push_back(a.image.empty() ? ChatMessage::text("user", a.prompt) : ChatMessage::text_then_image("user", a.prompt));
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
  caller.seed = a.seed;
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
  VlmArgs vlm;
  std::vector<std::string> images;
  std::string labels = "mikels8", mode = "score";
  bool as_json = false;
  int batch = 1, max_new_tokens = 256;
  double temperature = 0.8;
  uint64_t seed = 0;
};

void run_classify(const ClassifyArgs& a) {
  const LabelSet labels = LabelSet::from_spec(a.labels);
  if (a.mode != "score" && a.mode != "generate") throw Error(cat("--mode must be score or generate, not '", a.mode, "'"));
  if (a.batch > 1 && a.mode != "score")
    throw Error("--batch is for --mode score: generate mode samples each image alone, as the reference does");
  Qwen2VL model = a.vlm.load();
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(a.vlm.model);
  const std::string text = render_chat({ChatMessage::text("system", kEmotionSystemMessage),
                                        ChatMessage::text_then_image("user", categorical_prompt(labels))}, true);
  std::vector<std::vector<int32_t>> cands;
  for (const auto& l : labels.labels) cands.push_back(proc.tokenizer().encode(categorical_answer(l) + "<|im_end|>"));
  GenerationConfig gen;
  if (a.mode == "generate") {
    GenerationConfig caller;
    caller.do_sample = true;
    caller.temperature = a.temperature;
    caller.top_p = 1.0;
    caller.max_new_tokens = a.max_new_tokens;
    caller.seed = a.seed;  // every image sampled from the same seed: its answer does not depend on the others
    caller.cuda_graph = a.vlm.cuda_graph;
    gen = GenerationConfig::merge(GenerationConfig::from_dir(a.vlm.model), caller);
  }

  json all = json::array();
  const std::vector<std::string> images = image_arguments(a.images);
  size_t failed = 0;
  auto show = [&](const json& r) {
    if (a.as_json) {
      all.push_back(r);
      return;
    }
    const std::string& path = r["image"].get_ref<const std::string&>();
    std::printf("%s: %s\n", path.c_str(), r["label"].is_null() ? "(unparsable answer)" : r["label"].get<std::string>().c_str());
    if (r.contains("probabilities"))
      for (const auto& l : labels.labels) std::printf("  %-12s %.4f\n", l.c_str(), r["probabilities"][l].get<double>());
    if (r.contains("answer")) std::printf("  answer: %s\n", r["answer"].get<std::string>().c_str());
    std::fflush(stdout);
  };
  // score mode: the label scores of `batch` images per forward (1: each alone, deterministic)
  std::vector<VlmPrompt> pending;
  std::vector<std::string> pending_paths;
  auto score_pending = [&] {
    if (pending.empty()) return;
    torch::Tensor scores = label_scores(*model, proc, pending, cands, a.batch == 1);  // [n, C]
    for (size_t k = 0; k < pending.size(); ++k) {
      torch::Tensor s = scores[static_cast<int64_t>(k)], prob = torch::softmax(s, 0);
      json r = {{"image", pending_paths[k]}, {"label", labels.labels[prob.argmax().item<int64_t>()]}};
      for (int i = 0; i < labels.size(); ++i) {
        r["probabilities"][labels.labels[i]] = prob[i].item<double>();
        r["sum_logprob"][labels.labels[i]] = s[i].item<double>();
      }
      show(r);
    }
    pending.clear();
    pending_paths.clear();
  };
  // images decoded (and capped at 1024 px) on worker threads, handed out in order
  struct Decoded {
    RgbImage image;
    std::string error;
  };
  const size_t batch = static_cast<size_t>(a.batch);
  OrderedPrefetcher<Decoded> decoded(
      images.size(),
      [&](size_t i) {
        Decoded d;
        try {
          d.image = cap_long_side(decode_image_file(images[i]), 1024);
        } catch (const Error& e) {
          d.error = e.what();
        }
        return d;
      },
      static_cast<int>(std::min<size_t>(std::max<size_t>(1, images.size()), std::max(1u, std::thread::hardware_concurrency()))),
      2 * batch);
  Decoded d;
  for (size_t i = 0; decoded.next(d); ++i) {
    const std::string& path = images[i];
    if (!d.error.empty()) {  // an unreadable image: said in its place, and the others still classified
      score_pending();
      ++failed;
      report_image_error(path, d.error, a.as_json, all);
      continue;
    }
    VlmPrompt p{text, {std::move(d.image)}};
    if (a.mode == "score") {
      pending.push_back(std::move(p));
      pending_paths.push_back(path);
      if (pending.size() == batch) score_pending();
      continue;
    }
    GenerationResult gr = generate(*model, proc.build({p}, model->device()), gen);
    std::vector<int32_t> ids(gr.tokens[0].begin(), gr.tokens[0].end());
    const std::string answer = proc.tokenizer().decode(ids, true);
    const ParsedAnswer pa = parse_categorical_answer(answer, labels);
    json r = {{"image", path}, {"answer", answer}, {"label", pa.index >= 0 ? json(labels.labels[pa.index]) : json(nullptr)}};
    if (pa.index < 0) r["unparsable"] = true;
    show(r);
  }
  score_pending();
  if (a.as_json) std::cout << all.dump(1) << std::endl;
  if (failed) throw Error(cat(failed, " of ", images.size(), " images could not be classified (see above)"));
}

}  // namespace

void add_vlm_commands(CLI::App& app) {
  auto c = std::make_shared<ChatArgs>();
  CLI::App* chat = app.add_subcommand("chat", "Ask the VLM about an image and stream its answer");
  add_vlm_flags(chat, c->vlm);
  chat->add_option("--image", c->image, "an image file: JPEG, PNG, GIF, BMP, WebP (omit for text only)");
  chat->add_option("--prompt", c->prompt, "the user message")->capture_default_str();
  chat->add_option("--system", c->system, "a system message (default: the model's)");
  chat->add_option("--max-new-tokens", c->max_new_tokens, "")->capture_default_str();
  chat->add_option("--temperature", c->temperature, "sample with this temperature (0: greedy)")->capture_default_str();
  chat->add_option("--seed", c->seed, "sampling seed")->capture_default_str();
  chat->callback([c] { run_chat(*c); });

  auto k = std::make_shared<ClassifyArgs>();
  CLI::App* cls = app.add_subcommand("classify", "Emotion of each image from the VLM: label scores or generate-and-parse");
  add_vlm_flags(cls, k->vlm);
  cls->add_option("images", k->images, "image files (JPEG, PNG, GIF, BMP, WebP) or directories of them")->required();
  cls->add_option("--labels", k->labels, "mikels8, ekman6, binary or a,b,c")->capture_default_str();
  cls->add_option("--mode", k->mode, "score (deterministic label scores) or generate (the reference's sampling + parsing)")
      ->capture_default_str();
  cls->add_option("--temperature", k->temperature, "generate mode: temperature (merged with generation_config.json)")
      ->capture_default_str();
  cls->add_option("--max-new-tokens", k->max_new_tokens, "generate mode")->capture_default_str();
  cls->add_option("--seed", k->seed, "generate mode: sampling seed")->capture_default_str();
  cls->add_option("--batch", k->batch,
                  "score mode: images per VLM forward (1: each alone, independent of the others; more: faster on a "
                  "GPU, equal to float rounding)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cls->add_flag("--json", k->as_json, "print JSON");
  cls->callback([k] { run_classify(*k); });
}

}  // namespace emovlm::cli
