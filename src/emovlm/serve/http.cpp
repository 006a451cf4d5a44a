// HTTP/1.1 request parsing and response serialization (see http.h).
#include "emovlm/serve/http.h"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace emovlm::http {

namespace {

bool is_tchar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// "1 MB", "64 KB" or "1000 bytes": how a limit is said in messages.
std::string size_words(size_t n) {
  if (n >= (1u << 20) && n % (1u << 20) == 0) return cat(n >> 20, " MB");
  if (n >= 1024 && n % 1024 == 0) return cat(n >> 10, " KB");
  return cat(n, " bytes");
}

constexpr size_t kMaxChunkLine = 256;

}  // namespace

const std::string* Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == name) return &v;
  return nullptr;
}

void RequestParser::reset() {
  state_ = State::RequestLine;
  req_ = Request();
  head_bytes_ = 0;
  line_.clear();
  declared_ = -1;
  chunk_left_ = 0;
  chunked_ = expect_continue_ = false;
  error_status_ = 0;
  error_message_.clear();
}

Request RequestParser::take() {
  Request r = std::move(req_);
  reset();
  return r;
}

void RequestParser::fail(int status, std::string message) {
  state_ = State::Failed;
  error_status_ = status;
  error_message_ = std::move(message);
}

size_t RequestParser::take_line(const char* data, size_t n, size_t limit, bool* complete) {
  const void* nl = std::memchr(data, '\n', n);
  const size_t take = nl ? static_cast<size_t>(static_cast<const char*>(nl) - data) + 1 : n;
  *complete = nl != nullptr;
  // at most limit + 3 bytes are kept: enough for the caller to see that the limit was passed
  const size_t room = limit + 3 > line_.size() ? limit + 3 - line_.size() : 0;
  line_.append(data, std::min(take, room));
  return take;
}

size_t RequestParser::feed(const char* data, size_t n) {
  size_t used = 0;
  while (used < n && state_ != State::Done && state_ != State::Failed) {
    const char* p = data + used;
    const size_t avail = n - used;
    switch (state_) {
      case State::RequestLine:
      case State::Headers:
      case State::Trailers: {
        const bool first = state_ == State::RequestLine;
        const size_t limit = first ? limits_.max_target + 32 : limits_.max_header_bytes;
        bool complete = false;
        used += take_line(p, avail, limit, &complete);
        if (line_.size() > limit + 2 || head_bytes_ + line_.size() > limits_.max_header_bytes + 2) {
          if (first)
            fail(414, cat("request target longer than ", limits_.max_target, " bytes"));
          else
            fail(431,
                 cat("request header fields larger than ", size_words(limits_.max_header_bytes)));
          break;
        }
        if (!complete) break;
        if (line_.size() < 2 || line_[line_.size() - 2] != '\r') {
          fail(400, "malformed request: lines must end in CRLF");
          break;
        }
        std::string_view line(line_.data(), line_.size() - 2);
        head_bytes_ += line_.size();
        if (first) {
          if (line.empty()) {  // an empty line before the request line is ignored (RFC 9112 2.2)
            line_.clear();
            break;
          }
          if (parse_request_line(line)) state_ = State::Headers;
        } else if (state_ == State::Trailers) {
          if (line.empty()) state_ = State::Done;
        } else if (line.empty()) {
          finish_headers();
        } else {
          parse_header_line(line);
        }
        line_.clear();
        break;
      }
      case State::Body: {
        const size_t k = std::min<size_t>(avail, static_cast<size_t>(declared_) - req_.body.size());
        req_.body.append(p, k);
        used += k;
        if (req_.body.size() == static_cast<size_t>(declared_)) state_ = State::Done;
        break;
      }
      case State::ChunkSize: {
        bool complete = false;
        used += take_line(p, avail, kMaxChunkLine, &complete);
        if (line_.size() > kMaxChunkLine + 1) {
          fail(400, "malformed chunked body: chunk size line too long");
          break;
        }
        if (!complete) break;
        if (line_.size() < 2 || line_[line_.size() - 2] != '\r') {
          fail(400, "malformed chunked body: lines must end in CRLF");
          break;
        }
        std::string_view line(line_.data(), line_.size() - 2);
        const std::string_view hex = line.substr(0, line.find(';'));  // chunk extensions ignored
        if (hex.empty() || hex.size() > 15 || !std::all_of(hex.begin(), hex.end(), [](char c) {
              return std::isxdigit(static_cast<unsigned char>(c));
            })) {
          fail(400, "malformed chunked body: bad chunk size");
          break;
        }
        const uint64_t size = std::stoull(std::string(hex), nullptr, 16);
        line_.clear();
        if (size > limits_.max_body || req_.body.size() + size > limits_.max_body) {
          fail(413, cat("request body over the limit of ", size_words(limits_.max_body)));
          break;
        }
        chunk_left_ = size;
        state_ = size == 0 ? State::Trailers : State::ChunkData;
        break;
      }
      case State::ChunkData: {
        const size_t k = static_cast<size_t>(std::min<uint64_t>(avail, chunk_left_));
        req_.body.append(p, k);
        used += k;
        chunk_left_ -= k;
        if (chunk_left_ == 0) state_ = State::ChunkDataEnd;
        break;
      }
      case State::ChunkDataEnd: {
        bool complete = false;
        used += take_line(p, avail, 0, &complete);
        if (line_.size() > 2 || line_ != std::string_view("\r\n").substr(0, line_.size()) ||
            (complete && line_ != "\r\n")) {
          fail(400, "malformed chunked body: chunk data not followed by CRLF");
          break;
        }
        if (complete) {
          line_.clear();
          state_ = State::ChunkSize;
        }
        break;
      }
      case State::Done:
      case State::Failed:
        break;
    }
  }
  return used;
}

bool RequestParser::parse_request_line(std::string_view line) {
  const size_t a = line.find(' ');
  const size_t b = a == std::string_view::npos ? a : line.find(' ', a + 1);
  if (a == std::string_view::npos || b == std::string_view::npos ||
      line.find(' ', b + 1) != std::string_view::npos || a == 0 || b == a + 1) {
    fail(400, "malformed request line: expected 'METHOD /path HTTP/1.1'");
    return false;
  }
  const std::string_view method = line.substr(0, a), target = line.substr(a + 1, b - a - 1),
                         version = line.substr(b + 1);
  if (!std::all_of(method.begin(), method.end(), is_tchar)) {
    fail(400, "malformed request line: bad method");
    return false;
  }
  if (target.size() > limits_.max_target) {
    fail(414, cat("request target longer than ", limits_.max_target, " bytes"));
    return false;
  }
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" ||
      !std::isdigit(static_cast<unsigned char>(version[5])) || version[6] != '.' ||
      !std::isdigit(static_cast<unsigned char>(version[7]))) {
    fail(400, "malformed request line: bad HTTP version");
    return false;
  }
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
    fail(400, cat("unsupported HTTP version '", version, "' (HTTP/1.1 and HTTP/1.0 are served)"));
    return false;
  }
  for (char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      fail(400, "malformed request line: control characters in the request target");
      return false;
    }
  if (target[0] != '/' && target != "*") {
    fail(400, "malformed request line: the request target must be a path starting with '/'");
    return false;
  }
  req_.method = std::string(method);
  req_.target = std::string(target);
  const size_t q = target.find('?');
  req_.path = std::string(target.substr(0, q));
  req_.query = q == std::string_view::npos ? "" : std::string(target.substr(q + 1));
  req_.minor_version = version[7] - '0';
  req_.keep_alive = req_.minor_version == 1;
  return true;
}

bool RequestParser::parse_header_line(std::string_view line) {
  if (line.front() == ' ' || line.front() == '\t') {
    fail(400, "malformed header: obsolete line folding");
    return false;
  }
  const size_t colon = line.find(':');
  const std::string_view name =
      colon == std::string_view::npos ? std::string_view() : line.substr(0, colon);
  if (name.empty() || !std::all_of(name.begin(), name.end(), is_tchar)) {
    fail(400, cat("malformed header line '", printable(line.substr(0, 40)), "'"));
    return false;
  }
  const std::string_view value = trim(line.substr(colon + 1));
  for (char c : value)
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
      fail(400, cat("malformed header '", name, "': control characters in the value"));
      return false;
    }
  if (req_.headers.size() >= limits_.max_headers) {
    fail(431, cat("more than ", limits_.max_headers, " request header fields"));
    return false;
  }
  req_.headers.emplace_back(lower(name), std::string(value));
  return true;
}

bool RequestParser::finish_headers() {
  const std::string* te = nullptr;
  std::string length;
  for (const auto& [k, v] : req_.headers) {
    if (k == "transfer-encoding") {
      if (te) {
        fail(400, "more than one Transfer-Encoding header");
        return false;
      }
      te = &v;
    } else if (k == "content-length") {
      if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), [](char c) {
            return std::isdigit(static_cast<unsigned char>(c));
          })) {
        fail(400, cat("invalid Content-Length '", printable(v, 40), "'"));
        return false;
      }
      if (!length.empty() && std::stoll(length) != std::stoll(v)) {
        fail(400, "conflicting Content-Length headers");
        return false;
      }
      length = v;
    } else if (k == "connection") {
      const std::string l = lower(v);
      if (l.find("close") != std::string::npos) req_.keep_alive = false;
      if (l.find("keep-alive") != std::string::npos && req_.minor_version == 0)
        req_.keep_alive = true;
    } else if (k == "expect") {
      if (lower(v) != "100-continue") {
        fail(417, cat("unsupported Expect '", printable(v, 40), "' (only 100-continue)"));
        return false;
      }
      expect_continue_ = true;
    }
  }
  if (te) {
    if (!length.empty()) {
      fail(400, "both Content-Length and Transfer-Encoding given");
      return false;
    }
    if (lower(*te) != "chunked" || req_.minor_version == 0) {
      fail(400, cat("unsupported Transfer-Encoding '", printable(*te, 40),
                    "' (only chunked, in HTTP/1.1)"));
      return false;
    }
    chunked_ = true;
    state_ = State::ChunkSize;
    return true;
  }
  declared_ = length.empty() ? 0 : std::stoll(length);
  if (static_cast<uint64_t>(declared_) > limits_.max_body) {
    fail(413, cat("request body of ", declared_, " bytes is over the limit of ",
                  size_words(limits_.max_body)));
    return false;
  }
  if (declared_ == 0) {
    state_ = State::Done;
    return true;
  }
  req_.body.reserve(static_cast<size_t>(declared_));
  state_ = State::Body;
  return true;
}

// ------------------------------------------------------------------------------- responses

const char* status_text(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
  }
}

namespace {
std::string head(const Response& r, bool keep_alive) {
  std::string h = cat("HTTP/1.1 ", r.status, " ", status_text(r.status), "\r\n");
  if (!r.content_type.empty()) h += "Content-Type: " + r.content_type + "\r\n";
  for (const auto& [k, v] : r.headers) h += k + ": " + v + "\r\n";
  h += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  return h;
}
}  // namespace

std::string serialize(const Response& r, bool keep_alive, bool head_only) {
  std::string out = head(r, keep_alive);
  out.reserve(out.size() + 32 + (head_only ? 0 : r.body.size()));
  out += cat("Content-Length: ", r.body.size(), "\r\n\r\n");
  if (!head_only) out += r.body;
  return out;
}

std::string serialize_stream_head(const Response& r, bool keep_alive) {
  return head(r, keep_alive) + "Transfer-Encoding: chunked\r\n\r\n";
}

std::string chunk(std::string_view data) {
  char size[24];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out = size;
  out.append(data.data(), data.size());
  out += "\r\n";
  return out;
}

std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range
    if (b < 0x80)
      len = 1;
    else if (b >= 0xC2 && b <= 0xDF)
      len = 2;
    else if (b == 0xE0)
      len = 3, lo = 0xA0;
    else if (b >= 0xE1 && b <= 0xEC)
      len = 3;
    else if (b == 0xED)
      len = 3, hi = 0x9F;
    else if (b >= 0xEE && b <= 0xEF)
      len = 3;
    else if (b == 0xF0)
      len = 4, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3)
      len = 4;
    else if (b == 0xF4)
      len = 4, hi = 0x8F;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    }
    if (ok) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string printable(std::string_view s, size_t max) {
  std::string out;
  for (char c : s.substr(0, max)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '"' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

}  // namespace emovlm::http
