// HTTP/1.1 messages: an incremental request parser that enforces every limit as the bytes come
// (request target, header size, body size for Content-Length and chunked bodies alike), and
// responses serialized whole so that each goes out in one write.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "emovlm/core/error.h"

namespace emovlm::http {

// A client error (4xx) or a refusal (503) with the message a client sees; `param` names the
// request field at fault where there is one (OpenAI's error shape has it).
class HttpError : public Error {
 public:
  HttpError(int status, const std::string& message, std::string param = "", std::string code = "")
      : Error(message), status(status), param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string param, code;
};

struct Request {
  std::string method, target, path, query;  // path: the target before '?'; query: after it
  int minor_version = 1;                    // HTTP/1.<minor>
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased, values trimmed
  std::string body;
  bool keep_alive = true;

  // The first header of that (lowercase) name, or nullptr.
  const std::string* header(std::string_view name) const;
};

struct Limits {
  size_t max_target = 8192;         // 414 beyond
  size_t max_header_bytes = 16384;  // the request line and the headers; 431 beyond
  size_t max_headers = 100;         // 431 beyond
  size_t max_body = 32u << 20;      // 413 beyond, whatever the transfer encoding
};

// Feeds bytes in any pieces; stops at the end of one request, so that bytes of pipelined
// requests after it stay with the caller. A malformed or over-limit request fails with the
// status and message to answer (the connection is then closed: its framing is lost).
class RequestParser {
 public:
  explicit RequestParser(const Limits& limits = {}) : limits_(limits) {}

  // Consumes bytes from data; returns how many. Consumes nothing once done() or failed().
  size_t feed(const char* data, size_t n);

  bool started() const { return state_ != State::RequestLine || head_bytes_ > 0 || !line_.empty(); }
  bool headers_done() const { return state_ >= State::Body; }
  bool done() const { return state_ == State::Done; }
  bool failed() const { return state_ == State::Failed; }
  int error_status() const { return error_status_; }
  const std::string& error_message() const { return error_message_; }
  // The headers asked for "100 Continue" and the body is still to come.
  bool expects_continue() const {
    return expect_continue_ && state_ > State::Headers && state_ < State::Done;
  }
  // The body's declared size (Content-Length), or -1 (chunked, or none yet).
  int64_t declared_length() const { return declared_; }
  const Request& request() const { return req_; }

  // The finished request; the parser starts over for the next one.
  Request take();
  void reset();

 private:
  enum class State {
    RequestLine,
    Headers,
    Body,
    ChunkSize,
    ChunkData,
    ChunkDataEnd,
    Trailers,
    Done,
    Failed
  };
  void fail(int status, std::string message);
  bool parse_request_line(std::string_view line);
  bool parse_header_line(std::string_view line);
  bool finish_headers();
  // Takes one CRLF-terminated line from data into line_ (limited to `limit` bytes); returns the
  // bytes consumed, and sets *complete when the line ended.
  size_t take_line(const char* data, size_t n, size_t limit, bool* complete);

  Limits limits_;
  State state_ = State::RequestLine;
  Request req_;
  size_t head_bytes_ = 0;  // bytes of the request line and headers so far (for the size limit)
  std::string line_;       // the line being read
  int64_t declared_ = -1;
  uint64_t chunk_left_ = 0;
  bool chunked_ = false, expect_continue_ = false;
  int error_status_ = 0;
  std::string error_message_;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string body;
};

// Status line, headers (Content-Length, Connection) and body in one buffer; head_only: the
// headers of a HEAD request, without the body.
std::string serialize(const Response& r, bool keep_alive, bool head_only = false);
// The head of a chunked response (the body follows as chunk()s and then chunk("")).
std::string serialize_stream_head(const Response& r, bool keep_alive);
std::string chunk(std::string_view data);
const char* status_text(int status);

// Text safe to put in JSON, a log line or a message: invalid UTF-8 bytes become U+FFFD.
std::string valid_utf8(std::string_view s);
// For a log line: control characters and quotes escaped, at most `max` bytes.
std::string printable(std::string_view s, size_t max = 512);

}  // namespace emovlm::http
