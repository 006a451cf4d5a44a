// A Qwen2-VL checkpoint answering chat completions for the server: the messages rendered with the
// chat template, the request's sampling over the checkpoint's generation_config.json, stop
// strings, and the answer's text streamed as it grows. Runs on the server's model thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "emovlm/core/device.h"
#include "emovlm/image/image.h"
#include "emovlm/text/chat.h"

namespace emovlm {

class Predictor;
struct Qwen2VLImageConfig;

struct ChatSettings {
  std::optional<double> temperature;  // 0: greedy; > 0: sampling at that temperature
  std::optional<double> top_p;
  std::optional<int> max_tokens;  // unset: the checkpoint's max_new_tokens, else the server's limit
  std::optional<int64_t> seed;    // unset: a fresh random seed
  std::vector<std::string> stop;
};

struct ChatAnswer {
  std::string text;
  std::string finish_reason;  // "stop" (end of turn or a stop string) or "length"
  int64_t prompt_tokens = 0, completion_tokens = 0;
  bool cancelled = false;  // on_text asked to stop (the client left)
};

class ChatModel {
 public:
  // A checkpoint directory (with a LoRA adapter merged at load when given); `id` is the name
  // clients use for it (default: the directory's name).
  ChatModel(const std::string& dir, const std::string& adapter, ComputeDtype dtype,
            ComputeDevice device, const std::string& id = "");
  // The VLM of a bundle, shared with its predictor (the same thread must run both).
  explicit ChatModel(Predictor& predictor, const std::string& id = "");
  ~ChatModel();

  const std::string& id() const;
  int64_t context_length() const;
  const Qwen2VLImageConfig& image_config() const;

  // The answer to `messages` (one image per ChatPart::Image, in order, already capped); at most
  // `max_tokens_limit` new tokens whatever the request asks (finish_reason "length" says so).
  // on_text receives each piece of the answer that is safe to send (no partial UTF-8 character,
  // nothing that may begin a stop string); returning false stops generation (cancelled). Throws
  // http::HttpError 400 when the prompt and max_tokens do not fit the context.
  ChatAnswer complete(const std::vector<ChatMessage>& messages, std::vector<RgbImage> images,
                      const ChatSettings& settings, int max_tokens_limit,
                      const std::function<bool(const std::string&)>& on_text);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace emovlm
