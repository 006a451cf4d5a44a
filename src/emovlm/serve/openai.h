// The OpenAI chat-completions protocol (as vLLM, llama.cpp's server and Ollama speak it), without
// the model: requests parsed and checked (text and image_url parts with data URLs, sampling
// fields, stop strings, streaming), responses and stream chunks built, errors in OpenAI's shape,
// and the stop-string scanner that decides what streamed text is safe to send.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/text/chat.h"

namespace emovlm::openai {

struct ChatImage {
  std::string bytes;  // the data URL's decoded content
  std::string where;  // "messages[1].content[0].image_url": named in errors about it
};

struct ChatRequest {
  std::string model;
  std::vector<ChatMessage> messages;  // one ChatPart::Image per image, in order
  std::vector<ChatImage> images;      // the images, in the order of their parts
  std::optional<double> temperature;  // 0: greedy
  std::optional<double> top_p;
  std::optional<int> max_tokens;  // max_completion_tokens or max_tokens
  std::optional<int64_t> seed;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses and checks a request body; throws http::HttpError 400 naming the field (its `param`).
ChatRequest parse_chat_request(std::string_view body);

// {"error": {"message", "type", "param", "code"}}; type from the status.
nlohmann::json error_body(int status, const std::string& message, const std::string& param = "",
                          const std::string& code = "");

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
  nlohmann::json to_json() const;
};

nlohmann::json completion(const std::string& id, int64_t created, const std::string& model,
                          const std::string& text, const std::string& finish_reason,
                          const Usage& usage);
// One chat.completion.chunk: a delta (role and/or content) or, with finish_reason, the last one.
nlohmann::json chunk(const std::string& id, int64_t created, const std::string& model,
                     const nlohmann::json& delta, const std::string& finish_reason = "");
// The usage chunk of stream_options.include_usage (empty choices).
nlohmann::json usage_chunk(const std::string& id, int64_t created, const std::string& model,
                           const Usage& usage);
// "data: {...}\n\n"
std::string sse(const nlohmann::json& event);

// The text of a generation as it grows, held back where a stop string may be starting: feed()
// the whole text so far; it returns what may be sent now. Once a stop string appears, stopped()
// is true and the text ends before it.
class StopScanner {
 public:
  explicit StopScanner(std::vector<std::string> stops);
  std::string feed(const std::string& text_so_far);
  // At the end of generation: whatever was held back (none of it a whole stop string).
  std::string finish();
  bool stopped() const { return stopped_; }
  const std::string& text() const { return text_; }  // everything released so far

 private:
  std::vector<std::string> stops_;
  std::string text_, pending_;  // released; the latest text beyond it
  bool stopped_ = false;
};

// Standard base64 (padding optional, no whitespace); throws Error on anything else.
std::string base64_decode(std::string_view in);

}  // namespace emovlm::openai
