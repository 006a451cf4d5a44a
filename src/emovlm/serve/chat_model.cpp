// Chat completions from a Qwen2-VL checkpoint (see chat_model.h).
#include "emovlm/serve/chat_model.h"

#include <filesystem>
#include <random>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/qwen2vl_generation.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/serve/http.h"
#include "emovlm/serve/openai.h"

namespace emovlm {

namespace fs = std::filesystem;

struct ChatModel::State {
  std::string id, dir;
  Qwen2VL owned{nullptr};  // loaded here (serve --model)
  std::unique_ptr<Qwen2VLProcessor> owned_proc;
  Qwen2VLImpl* model = nullptr;  // owned, or the predictor's
  const Qwen2VLProcessor* proc = nullptr;
  GenerationConfig defaults;  // generation_config.json
  int64_t context = 32768;
};

namespace {

std::string name_of(const std::string& dir) {
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return fs::path(d).filename().string();
}

void read_checkpoint_settings(const std::string& dir, GenerationConfig* g, int64_t* context) {
  *g = GenerationConfig::from_dir(dir);
  const json cfg = read_json_file((fs::path(dir) / "config.json").string());
  const json& text = cfg.contains("text_config") ? cfg["text_config"] : cfg;
  *context = json_optional<int64_t>(text, "max_position_embeddings", 32768, dir + "/config.json");
}

}  // namespace

ChatModel::ChatModel(const std::string& dir, const std::string& adapter, ComputeDtype dtype,
                     ComputeDevice device, const std::string& id)
    : s_(std::make_unique<State>()) {
  s_->dir = dir;
  s_->id = id.empty() ? name_of(dir) : id;
  s_->owned =
      Qwen2VL(Qwen2VLImpl::from_pretrained(dir, adapter, to_torch(dtype), to_torch(device)));
  s_->owned_proc = std::make_unique<Qwen2VLProcessor>(Qwen2VLProcessor::from_dir(dir));
  s_->model = s_->owned.get();
  s_->proc = s_->owned_proc.get();
  read_checkpoint_settings(dir, &s_->defaults, &s_->context);
}

ChatModel::ChatModel(Predictor& predictor, const std::string& id) : s_(std::make_unique<State>()) {
  s_->dir = predictor.vlm_dir();
  s_->id = id.empty() ? name_of(s_->dir) : id;
  s_->model = &predictor.vlm();
  s_->proc = &predictor.processor();
  read_checkpoint_settings(s_->dir, &s_->defaults, &s_->context);
}

ChatModel::~ChatModel() = default;

const std::string& ChatModel::id() const {
  return s_->id;
}
int64_t ChatModel::context_length() const {
  return s_->context;
}
const Qwen2VLImageConfig& ChatModel::image_config() const {
  return s_->proc->image_config();
}

namespace {
struct Cancelled {};  // thrown from the token callback to leave generate() early
}  // namespace

ChatAnswer ChatModel::complete(const std::vector<ChatMessage>& messages,
                               std::vector<RgbImage> images, const ChatSettings& st,
                               int max_tokens_limit,
                               const std::function<bool(const std::string&)>& on_text) {
  torch::NoGradGuard ng;
  VlmPrompt prompt{render_chat(messages, true), std::move(images)};
  Qwen2VLInputs inputs = s_->proc->build({prompt}, s_->model->device());
  ChatAnswer a;
  a.prompt_tokens = inputs.input_ids.size(1);
  GenerationConfig caller;
  // what the request asks for (else the checkpoint's default), at most the server's limit
  const int wanted =
      std::min(st.max_tokens.value_or(s_->defaults.max_new_tokens.value_or(max_tokens_limit)),
               max_tokens_limit);
  const int64_t room = s_->context - a.prompt_tokens;
  if (room < 1 || (st.max_tokens && *st.max_tokens > room))
    throw http::HttpError(
        400,
        cat("this model's context is ", s_->context, " tokens; the messages take ", a.prompt_tokens,
            st.max_tokens ? cat(" and max_tokens asks for ", *st.max_tokens) : std::string()),
        "messages");
  caller.max_new_tokens = static_cast<int>(std::min<int64_t>(wanted, room));
  if (st.temperature) {
    caller.do_sample = *st.temperature > 0;
    if (*st.temperature > 0) caller.temperature = *st.temperature;
  }
  if (st.top_p) caller.top_p = *st.top_p;
  caller.seed = st.seed ? static_cast<uint64_t>(*st.seed) : std::random_device{}();
  GenerationConfig g = GenerationConfig::merge(s_->defaults, caller);
  if (st.temperature && *st.temperature == 0) g.do_sample = false;

  const Tokenizer& tok = s_->proc->tokenizer();
  openai::StopScanner scanner(st.stop);
  std::vector<int32_t> tokens;
  size_t stable = 0;  // bytes of decoded text known complete (no partial UTF-8 at its end)
  GenerationResult r;
  try {
    r = generate(*s_->model, inputs, g, [&](int64_t, int64_t t) {
      tokens.push_back(static_cast<int32_t>(t));
      // decode the whole answer so far: a character may span tokens (U+FFFD until complete)
      const std::string text = tok.decode(tokens, true);
      if (text.find("\xEF\xBF\xBD", stable) != std::string::npos) return;
      stable = text.size();
      const std::string piece = scanner.feed(text);
      if (!piece.empty() && on_text && !on_text(piece)) throw Cancelled{};
      if (scanner.stopped()) throw Cancelled{};  // a stop string: nothing more is wanted
    });
  } catch (const Cancelled&) {
    a.cancelled = !scanner.stopped();
  }
  if (!scanner.stopped()) {
    // the last characters (a U+FFFD the model really produced, or text held for a stop string)
    std::string rest = scanner.feed(tok.decode(tokens, true));
    if (!scanner.stopped()) rest += scanner.finish();
    if (!rest.empty() && on_text && !a.cancelled) on_text(rest);
  }
  a.text = scanner.text();
  a.completion_tokens = static_cast<int64_t>(tokens.size());
  const bool eos = !r.stopped.empty() && r.stopped[0];
  a.finish_reason = scanner.stopped() || eos ? "stop" : "length";
  return a;
}

}  // namespace emovlm
