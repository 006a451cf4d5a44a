// The OpenAI chat-completions protocol (see openai.h).
#include "emovlm/serve/openai.h"

#include <algorithm>
#include <cmath>

#include "emovlm/serve/http.h"

namespace emovlm::openai {

using json = nlohmann::json;
using http::HttpError;

namespace {

[[noreturn]] void bad(const std::string& message, const std::string& param) {
  throw HttpError(400, message, param);
}

double number(const json& v, const std::string& name) {
  if (!v.is_number()) bad(cat("'", name, "' must be a number"), name);
  const double d = v.get<double>();
  if (!std::isfinite(d)) bad(cat("'", name, "' must be finite"), name);
  return d;
}

int64_t integer(const json& v, const std::string& name) {
  if (!v.is_number_integer()) bad(cat("'", name, "' must be an integer"), name);
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    bad(cat("'", name, "' is too large"), name);
  return v.get<int64_t>();
}

// "data:image/png;base64,...." -> the bytes
std::string data_url(const std::string& url, const std::string& where) {
  if (url.rfind("data:", 0) != 0)
    bad(cat(where,
            ": only data: URLs are accepted (data:image/png;base64,...); this server fetches "
            "nothing"),
        where);
  const size_t comma = url.find(',');
  if (comma == std::string::npos) bad(cat(where, ": malformed data URL (no ',')"), where);
  const std::string meta = url.substr(5, comma - 5);
  if (meta.size() < 7 || meta.compare(meta.size() - 7, 7, ";base64") != 0)
    bad(cat(where, ": the data URL must be base64 (data:<type>;base64,...)"), where);
  try {
    std::string bytes = base64_decode(std::string_view(url).substr(comma + 1));
    if (bytes.empty()) bad(cat(where, ": the data URL holds no bytes"), where);
    return bytes;
  } catch (const HttpError&) {
    throw;
  } catch (const Error& e) {
    bad(cat(where, ": ", e.what()), where);
  }
}

void refuse_unsupported(const json& j) {
  auto refuse = [](const std::string& name) {
    bad(cat("'", name, "' is not supported by this server"), name);
  };
  for (const char* k : {"tools", "functions", "logit_bias"})
    if (j.contains(k) && !j[k].is_null() && !j[k].empty()) refuse(k);
  if (j.contains("tool_choice") && !j["tool_choice"].is_null() && j["tool_choice"] != "none")
    refuse("tool_choice");
  if (j.contains("logprobs") && j["logprobs"].is_boolean() && j["logprobs"].get<bool>())
    refuse("logprobs");
  if (j.contains("top_logprobs") && !j["top_logprobs"].is_null()) refuse("top_logprobs");
  for (const char* k : {"presence_penalty", "frequency_penalty"})
    if (j.contains(k) && !j[k].is_null() && number(j[k], k) != 0) refuse(k);
  if (j.contains("n") && !j["n"].is_null() && integer(j["n"], "n") != 1)
    bad("'n' must be 1 (one choice per request)", "n");
  if (j.contains("response_format") && j["response_format"].is_object() &&
      j["response_format"].value("type", "text") != "text")
    refuse("response_format");
}

void parse_content(const json& content, const std::string& at, ChatMessage& m, ChatRequest& r) {
  if (content.is_null()) {
    m.parts.push_back({ChatPart::Kind::Text, ""});
    m.plain_string = true;
    return;
  }
  if (content.is_string()) {
    m.parts.push_back({ChatPart::Kind::Text, http::valid_utf8(content.get<std::string>())});
    m.plain_string = true;
    return;
  }
  if (!content.is_array())
    bad(cat("'", at, ".content' must be a string or a list of parts"), at + ".content");
  for (size_t k = 0; k < content.size(); ++k) {
    const json& part = content[k];
    const std::string where = cat(at, ".content[", k, "]");
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
      bad(cat("'", where, "' must be an object with a 'type'"), where);
    const std::string type = part["type"];
    if (type == "text") {
      if (!part.contains("text") || !part["text"].is_string())
        bad(cat("'", where, ".text' must be a string"), where + ".text");
      m.parts.push_back({ChatPart::Kind::Text, http::valid_utf8(part["text"].get<std::string>())});
    } else if (type == "image_url") {
      const json* u = part.contains("image_url") ? &part["image_url"] : nullptr;
      std::string url;
      if (u && u->is_string())
        url = *u;
      else if (u && u->is_object() && u->contains("url") && (*u)["url"].is_string())
        url = (*u)["url"];
      else
        bad(cat("'", where, ".image_url' must be {\"url\": \"data:...\"}"), where + ".image_url");
      m.parts.push_back({ChatPart::Kind::Image, ""});
      r.images.push_back({data_url(url, where + ".image_url"), where + ".image_url"});
    } else {
      bad(cat("'", where, "': content parts of type '", http::valid_utf8(type),
              "' are not supported (text and image_url are)"),
          where + ".type");
    }
  }
}

}  // namespace

ChatRequest parse_chat_request(std::string_view body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    bad(cat("the body is not valid JSON (", e.what(), ")"), "");
  }
  if (!j.is_object()) bad("the body must be a JSON object", "");
  ChatRequest r;
  if (j.contains("model") && !j["model"].is_null()) {
    if (!j["model"].is_string()) bad("'model' must be a string", "model");
    r.model = http::valid_utf8(j["model"].get<std::string>());
  }
  if (!j.contains("messages") || !j["messages"].is_array() || j["messages"].empty())
    bad("'messages' must be a non-empty list", "messages");
  const json& msgs = j["messages"];
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string at = cat("messages[", i, "]");
    const json& mj = msgs[i];
    if (!mj.is_object() || !mj.contains("role") || !mj["role"].is_string())
      bad(cat("'", at, "' must be an object with a 'role'"), at);
    std::string role = mj["role"];
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant")
      bad(cat("'", at, ".role' must be system, developer, user or assistant, not '",
              http::valid_utf8(role), "'"),
          at + ".role");
    ChatMessage m;
    m.role = role;
    parse_content(mj.contains("content") ? mj["content"] : json(nullptr), at, m, r);
    r.messages.push_back(std::move(m));
  }
  refuse_unsupported(j);
  if (j.contains("temperature") && !j["temperature"].is_null()) {
    r.temperature = number(j["temperature"], "temperature");
    if (*r.temperature < 0 || *r.temperature > 2)
      bad("'temperature' must be between 0 and 2", "temperature");
  }
  if (j.contains("top_p") && !j["top_p"].is_null()) {
    r.top_p = number(j["top_p"], "top_p");
    if (*r.top_p <= 0 || *r.top_p > 1) bad("'top_p' must be in (0, 1]", "top_p");
  }
  for (const char* k : {"max_tokens", "max_completion_tokens"})
    if (j.contains(k) && !j[k].is_null()) {
      const int64_t v = integer(j[k], k);
      if (v < 1 || v > 1000000) bad(cat("'", k, "' must be at least 1"), k);
      r.max_tokens = static_cast<int>(v);
    }
  if (j.contains("seed") && !j["seed"].is_null()) r.seed = integer(j["seed"], "seed");
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s);
    } else if (s.is_array()) {
      for (const json& x : s) {
        if (!x.is_string()) bad("'stop' must be a string or a list of strings", "stop");
        r.stop.push_back(x);
      }
    } else {
      bad("'stop' must be a string or a list of strings", "stop");
    }
    if (r.stop.size() > 4) bad("'stop' takes at most 4 strings", "stop");
    for (std::string& x : r.stop) {
      if (x.empty()) bad("'stop' strings must not be empty", "stop");
      x = http::valid_utf8(x);
    }
  }
  if (j.contains("stream") && !j["stream"].is_null()) {
    if (!j["stream"].is_boolean()) bad("'stream' must be true or false", "stream");
    r.stream = j["stream"];
  }
  if (j.contains("stream_options") && j["stream_options"].is_object()) {
    const json& so = j["stream_options"];
    if (so.contains("include_usage") && so["include_usage"].is_boolean())
      r.include_usage = so["include_usage"];
  }
  return r;
}

json error_body(int status, const std::string& message, const std::string& param,
                const std::string& code) {
  std::string type = status == 401 || status == 403 ? "authentication_error"
                     : status >= 500                ? "server_error"
                                                    : "invalid_request_error";
  return {{"error",
           {{"message", http::valid_utf8(message)},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

json Usage::to_json() const {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json completion(const std::string& id, int64_t created, const std::string& model,
                const std::string& text, const std::string& finish_reason, const Usage& usage) {
  return {{"id", id},
          {"object", "chat.completion"},
          {"created", created},
          {"model", model},
          {"choices",
           {{{"index", 0},
             {"message", {{"role", "assistant"}, {"content", http::valid_utf8(text)}}},
             {"logprobs", nullptr},
             {"finish_reason", finish_reason}}}},
          {"usage", usage.to_json()}};
}

json chunk(const std::string& id, int64_t created, const std::string& model, const json& delta,
           const std::string& finish_reason) {
  return {{"id", id},
          {"object", "chat.completion.chunk"},
          {"created", created},
          {"model", model},
          {"choices",
           {{{"index", 0},
             {"delta", delta},
             {"logprobs", nullptr},
             {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}}}}};
}

json usage_chunk(const std::string& id, int64_t created, const std::string& model,
                 const Usage& usage) {
  return {{"id", id},       {"object", "chat.completion.chunk"}, {"created", created},
          {"model", model}, {"choices", json::array()},          {"usage", usage.to_json()}};
}

std::string sse(const json& event) {
  return "data: " + event.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

// --------------------------------------------------------------------------- StopScanner

StopScanner::StopScanner(std::vector<std::string> stops) : stops_(std::move(stops)) {}

std::string StopScanner::feed(const std::string& full) {
  if (stopped_ || full.size() <= text_.size()) return "";
  const std::string_view fresh = std::string_view(full).substr(text_.size());
  // the earliest stop string in the text not yet released (none can start in released text:
  // what might begin one is always held back)
  size_t at = std::string_view::npos;
  for (const std::string& s : stops_)
    if (!s.empty()) at = std::min(at, fresh.find(s));
  if (at != std::string_view::npos) {
    std::string out(fresh.substr(0, at));
    text_ += out;
    pending_.clear();
    stopped_ = true;
    return out;
  }
  // hold back the longest end of the text that a stop string begins with
  size_t hold = 0;
  for (const std::string& s : stops_)
    for (size_t k = std::min(s.empty() ? 0 : s.size() - 1, fresh.size()); k > hold; --k)
      if (fresh.compare(fresh.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  std::string out(fresh.substr(0, fresh.size() - hold));
  text_ += out;
  pending_ = std::string(fresh.substr(fresh.size() - hold));
  return out;
}

std::string StopScanner::finish() {
  if (stopped_) return "";
  std::string out = std::move(pending_);
  pending_.clear();
  text_ += out;
  return out;
}

// ------------------------------------------------------------------------------- base64

std::string base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  size_t pad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '=') {
      ++pad;
      continue;
    }
    if (c == '\r' || c == '\n' || c == ' ' || c == '\t') continue;
    const int v = value(c);
    if (v < 0 || pad > 0) throw Error(cat("invalid base64 at byte ", i));
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  if (pad > 2 || bits >= 6) throw Error("invalid base64: truncated");
  return out;
}

}  // namespace emovlm::openai
