// A small event-driven HTTP/1.1 server (Linux epoll): one I/O thread owns every connection, so a
// slow or idle client costs a file descriptor and a few buffers, never a thread.
//
// Why not cpp-httplib's server: it gives each connection a thread from a fixed pool and reads with
// per-recv timeouts, so as many clients as there are threads, each sending a header byte now and
// then, hold the whole pool indefinitely; its body limit skips chunked bodies; it writes the header
// and the body separately without TCP_NODELAY (Nagle + delayed ACK: 40 ms per kept-alive request);
// it shares ports through SO_REUSEPORT; it has no drain. Here:
//   - deadlines per request, not per recv: the header must be complete within header_timeout_ms of
//     its first byte, the body within body_timeout_ms of the header; idle kept-alive connections
//     close after idle_timeout_ms; a client that does not read its response within
//     write_timeout_ms is dropped. Expired requests get 408.
//   - at most max_connections; past that the oldest idle connection is closed to make room, or the
//     newcomer gets 503. The bodies being received are limited in all (max_buffered_bytes: 503).
//   - limits on the request target (414), the headers (431) and the body, Content-Length and
//     chunked alike (413 as soon as it is passed; the rest is not read); an error closes the
//     connection after its response (the framing is lost), half-closing and briefly draining
//     first so that the client reads the response instead of a reset.
//   - pipelined requests are parsed one at a time and answered in order; each response is one
//     write (header and body in one buffer) on a TCP_NODELAY socket; keep-alive.
//   - handlers run on the I/O thread and must not block: they answer at once or hand the exchange
//     to another thread, which answers from there (or streams a chunked response).
//   - the port is bound without SO_REUSEPORT: a port in use is refused. stop() drains: it stops
//     accepting, closes idle connections, lets requests in flight finish (drain_timeout_ms at
//     most).
//   - an access-log line per request.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "emovlm/serve/http.h"

namespace emovlm::http {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0: any free port
  int backlog = 1024;
  int max_connections = 256;
  Limits limits;
  size_t max_buffered_bytes = size_t{512} << 20;  // request bodies held at once, all connections
  int header_timeout_ms = 10000;
  int body_timeout_ms = 60000;
  int idle_timeout_ms = 30000;
  int write_timeout_ms = 30000;
  int drain_timeout_ms = 30000;
  // One line per request (none when empty); called on the I/O thread.
  std::function<void(const std::string&)> access_log;
  // The JSON body of the errors the server answers itself (408, 413, 414, 431, 400 for malformed
  // requests; 503): {"error": message} when empty. `path` is the request's, "" when unknown.
  std::function<std::string(const std::string& path, int status, const std::string& message)>
      error_body;
};

class Mailbox;

// One request and the way to answer it, from any thread, once: respond(), or start_stream(),
// stream()... and end_stream(). Dropping the last reference without answering answers 500.
class Exchange {
 public:
  Exchange(std::shared_ptr<Mailbox> mailbox, uint64_t conn, Request request, std::string peer,
           std::shared_ptr<std::atomic<bool>> gone);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  const Request& request() const { return request_; }
  Request& request() { return request_; }
  const std::string& peer() const { return peer_; }

  void respond(Response response);
  // A chunked response: the head now, the body in pieces. stream() returns false once the client
  // is gone (the caller may stop producing).
  void start_stream(Response head);
  bool stream(std::string data);
  void end_stream();
  // The connection closed or failed (a write error); nothing more will reach the client.
  bool client_gone() const { return gone_->load(); }
  bool answered() const { return answered_; }

 private:
  std::shared_ptr<Mailbox> mailbox_;
  uint64_t conn_;
  Request request_;
  std::string peer_;
  std::shared_ptr<std::atomic<bool>> gone_;
  bool answered_ = false, streaming_ = false;
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

class HttpServer {
 public:
  HttpServer(const ServerOptions& options, Handler handler);
  ~HttpServer();
  // Binds and listens; returns the port. Throws Error naming the address when it cannot.
  int bind();
  // Serves until stop() has drained the connections.
  void run();
  // Graceful stop from any thread; also safe in a signal handler (an atomic store and a write).
  void stop() noexcept;
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace emovlm::http
