// libFuzzer target: HTTP requests as the server parses them. The first byte sets the size of the
// pieces the bytes arrive in; the request parser must then consume every piece until it finishes
// or fails (with a 4xx), never crash, and keep each body within its limit. What it accepts goes on
// through the multipart parser, the chat-completion request parser and the stop-string scanner.
// Built with clang (-fsanitize=fuzzer,address,undefined) when the build finds it; see
// tests/CMakeLists.txt.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "emovlm/serve/http.h"
#include "emovlm/serve/multipart.h"
#include "emovlm/serve/openai.h"

using namespace emovlm;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void on_request(const http::Request& r, const http::Limits& limits) {
  check(r.body.size() <= limits.max_body);
  check(r.target.size() <= limits.max_target);
  check(!r.method.empty() && !r.target.empty());
  // text that reaches JSON and logs is made valid first
  const std::string name = http::valid_utf8(r.target);
  check(nlohmann::json(name).dump().size() >= 2);
  http::printable(r.body);
  if (const std::string* type = r.header("content-type"); type && http::is_multipart(*type)) {
    try {
      for (const http::MultipartPart& p : http::parse_multipart(r.body, *type)) {
        check(p.content.data() >= r.body.data() &&
              p.content.data() + p.content.size() <= r.body.data() + r.body.size());
        nlohmann::json(http::valid_utf8(p.filename)).dump();
      }
    } catch (const http::HttpError& e) {
      check(e.status == 400);
    }
  }
  try {
    openai::ChatRequest c = openai::parse_chat_request(r.body);
    check(!c.messages.empty());
    openai::StopScanner s(c.stop);
    std::string text;
    for (const ChatMessage& m : c.messages)
      for (const ChatPart& p : m.parts) {
        text += p.text;
        const std::string out = s.feed(text);
        check(s.text().size() <= text.size());
      }
    s.finish();
  } catch (const http::HttpError& e) {
    check(e.status == 400 || e.status == 404);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t step = static_cast<size_t>(data[0] % 64) + 1;
  ++data;
  --size;
  http::Limits limits;
  limits.max_target = 256;
  limits.max_header_bytes = 1024;
  limits.max_headers = 16;
  limits.max_body = 8192;
  http::RequestParser parser(limits);
  size_t off = 0;
  while (off < size) {
    const size_t n = std::min(step, size - off);
    const size_t used = parser.feed(reinterpret_cast<const char*>(data) + off, n);
    check(used <= n);
    off += used;
    if (parser.failed()) {
      const int s = parser.error_status();
      check(s == 400 || s == 413 || s == 414 || s == 417 || s == 431);
      check(!parser.error_message().empty());
      return 0;
    }
    if (parser.done()) {
      on_request(parser.take(), limits);
      continue;  // pipelined requests after it
    }
    check(used == n);  // unfinished: every byte offered is taken
  }
  return 0;
}
