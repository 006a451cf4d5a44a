// Raw HTTP/1.1 over loopback sockets for the server tests: exact bytes out (pipelining, chunked
// bodies, byte-by-byte headers), responses parsed as they arrive, every wait bounded.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace emovlm::test {

using Clock = std::chrono::steady_clock;

struct RawResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

class RawConn {
 public:
  explicit RawConn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;
  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  // Sends everything (false when the peer is gone).
  bool send_all(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  // One recv() of whatever is there, waiting up to `timeout_s` for it; "" at EOF or timeout
  // (eof() tells which).
  std::string recv_some(double timeout_s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout_s * 1000)) <= 0) return "";
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      eof_ = true;
      return "";
    }
    return std::string(buf, static_cast<size_t>(n));
  }
  bool eof() const { return eof_; }

  // The next response (Content-Length or chunked body), reading until `timeout_s` from now;
  // nullopt when the connection closed or the time ran out first.
  std::optional<RawResponse> read_response(double timeout_s = 60) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      if (auto r = parse()) return r;
      const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
      if (left <= 0 || eof_) return std::nullopt;
      buf_ += recv_some(left);
      if (eof_) return parse();
    }
  }

  // Bytes received but not yet parsed.
  const std::string& pending() const { return buf_; }

  // Waits for the server to close the connection (true) or `timeout_s` to pass (false).
  bool wait_closed(double timeout_s) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    while (!eof_) {
      const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      buf_ += recv_some(left);
    }
    return true;
  }

 private:
  std::optional<RawResponse> parse() {
    const size_t end = buf_.find("\r\n\r\n");
    if (end == std::string::npos) return std::nullopt;
    RawResponse r;
    const std::string head = buf_.substr(0, end);
    size_t sp = head.find(' ');
    if (sp == std::string::npos) return std::nullopt;
    r.status = std::atoi(head.c_str() + sp + 1);
    size_t pos = head.find("\r\n");
    while (pos != std::string::npos && pos < head.size()) {
      const size_t next = head.find("\r\n", pos + 2);
      const std::string line =
          head.substr(pos + 2, (next == std::string::npos ? head.size() : next) - pos - 2);
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        size_t v = colon + 1;
        while (v < line.size() && line[v] == ' ') ++v;
        r.headers[name] = line.substr(v);
      }
      pos = next;
    }
    size_t body_start = end + 4;
    if (r.status / 100 == 1) {  // 100 Continue: no body, the real response follows
      buf_.erase(0, body_start);
      return parse();
    }
    if (r.header("transfer-encoding") == "chunked") {
      size_t p = body_start;
      std::string body;
      for (;;) {
        const size_t eol = buf_.find("\r\n", p);
        if (eol == std::string::npos) return std::nullopt;
        const size_t n = std::stoul(buf_.substr(p, eol - p), nullptr, 16);
        if (n == 0) {
          const size_t fin = buf_.find("\r\n", eol + 2);
          if (fin == std::string::npos) return std::nullopt;
          buf_.erase(0, fin + 2);
          r.body = body;
          return r;
        }
        if (buf_.size() < eol + 2 + n + 2) return std::nullopt;
        body += buf_.substr(eol + 2, n);
        p = eol + 2 + n + 2;
      }
    }
    const std::string cl = r.header("content-length");
    if (cl.empty()) {  // no length: the body is everything up to the close
      if (!eof_) return std::nullopt;
      r.body = buf_.substr(body_start);
      buf_.clear();
      return r;
    }
    const size_t n = std::stoul(cl);
    if (buf_.size() < body_start + n) return std::nullopt;
    r.body = buf_.substr(body_start, n);
    buf_.erase(0, body_start + n);
    return r;
  }
  int fd_ = -1;
  bool connected_ = false, eof_ = false;
  std::string buf_;
};

// A request with a body: method, target, extra header lines ("Name: value\r\n"...), body.
inline std::string raw_request(const std::string& method, const std::string& target,
                               const std::string& body, const std::string& headers = "") {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers;
  if (!body.empty() || method == "POST")
    r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

// One request on a fresh connection; nullopt when no response came within `timeout_s`.
inline std::optional<RawResponse> roundtrip(int port, const std::string& request,
                                            double timeout_s = 60) {
  RawConn c(port);
  if (!c.connected() || !c.send_all(request)) return std::nullopt;
  return c.read_response(timeout_s);
}

}  // namespace emovlm::test
