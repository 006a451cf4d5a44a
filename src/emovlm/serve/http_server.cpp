// The epoll HTTP/1.1 server (see http_server.h for the connection model and why).
#include "emovlm/serve/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace emovlm::http {

using Clock = std::chrono::steady_clock;

// What other threads send to the I/O thread: responses and stream pieces, and the stop request.
class Mailbox {
 public:
  enum class Kind { Full, Head, Chunk, End };
  struct Message {
    uint64_t conn;
    Kind kind;
    Response response;  // Full, Head
    std::string data;   // Chunk
  };
  Mailbox() : fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd < 0) throw Error(cat("serve: eventfd failed: ", std::strerror(errno)));
  }
  ~Mailbox() { ::close(fd); }
  void post(Message m) {
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back(std::move(m));
    }
    wake();
  }
  void wake() noexcept {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
  }
  std::deque<Message> take() {
    uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(fd, &v, sizeof v);
    std::lock_guard<std::mutex> l(mu_);
    return std::move(queue_);
  }
  const int fd;
  std::atomic<bool> stop_requested{false};

 private:
  std::mutex mu_;
  std::deque<Message> queue_;
};

// ------------------------------------------------------------------------------- Exchange

Exchange::Exchange(std::shared_ptr<Mailbox> mailbox, uint64_t conn, Request request,
                   std::string peer, std::shared_ptr<std::atomic<bool>> gone)
    : mailbox_(std::move(mailbox)),
      conn_(conn),
      request_(std::move(request)),
      peer_(std::move(peer)),
      gone_(std::move(gone)) {}

Exchange::~Exchange() {
  if (streaming_) {
    end_stream();
  } else if (!answered_) {
    Response r;
    r.status = 500;
    r.body = R"({"error": "the request was dropped without an answer"})";
    respond(std::move(r));
  }
}

void Exchange::respond(Response response) {
  if (answered_) return;
  answered_ = true;
  mailbox_->post({conn_, Mailbox::Kind::Full, std::move(response), {}});
}

void Exchange::start_stream(Response head) {
  if (answered_) return;
  answered_ = streaming_ = true;
  mailbox_->post({conn_, Mailbox::Kind::Head, std::move(head), {}});
}

bool Exchange::stream(std::string data) {
  if (!streaming_ || client_gone()) return false;
  if (!data.empty()) mailbox_->post({conn_, Mailbox::Kind::Chunk, {}, std::move(data)});
  return true;
}

void Exchange::end_stream() {
  if (!streaming_) return;
  streaming_ = false;
  mailbox_->post({conn_, Mailbox::Kind::End, {}, {}});
}

// ------------------------------------------------------------------------------- the server

namespace {

constexpr uint64_t kListenerId = 0, kMailboxId = 1;
constexpr size_t kReadChunk = 64 << 10;
constexpr size_t kMaxPipelined = 256
                                 << 10;  // bytes of later requests read ahead while one is handled
constexpr size_t kLingerDiscard = 1 << 20;  // what a closing connection reads and drops at most
constexpr int kLingerMs = 2000;

enum class Phase { Idle, Reading, Handling, Streaming, Lingering };

struct Conn {
  uint64_t id = 0;
  int fd = -1;
  std::string peer;
  RequestParser parser;
  std::string in;  // bytes read and not yet parsed (pipelined requests)
  size_t in_off = 0;
  std::string out;  // bytes to write
  size_t out_off = 0;
  Phase phase = Phase::Idle;
  Clock::time_point deadline;     // of the current phase
  Clock::time_point write_since;  // when the pending output last made progress
  bool body_phase = false, continue_sent = false, charged_declared = false;
  bool keep_alive = true, head_only = false, complete_after_flush = false;
  bool peer_eof = false, reading = true, writing = false;
  size_t reserved = 0;  // body bytes counted against max_buffered_bytes
  size_t lingered = 0;
  std::shared_ptr<std::atomic<bool>> gone;
  // the access log's fields
  std::string method, target;
  int minor = 1, status = 0;
  size_t bytes_out = 0;
  Clock::time_point started;
};

}  // namespace

struct HttpServer::Impl {
  ServerOptions o;
  Handler handler;
  std::shared_ptr<Mailbox> mailbox = std::make_shared<Mailbox>();
  int listen_fd = -1, epfd = -1, port = -1;
  uint64_t next_id = 2;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns;
  size_t buffered = 0;  // sum of the connections' `reserved`
  bool draining = false;
  Clock::time_point drain_deadline;
  std::vector<uint64_t>
      ready;  // connections with a pipelined request to parse (a loop, not recursion)
  Clock::time_point accept_paused_until{};  // out of file descriptors: accepting resumes then
  bool accept_paused = false;

  Impl(const ServerOptions& opt, Handler h) : o(opt), handler(std::move(h)) {}
  ~Impl() {
    for (auto& [id, c] : conns) ::close(c->fd);
    if (listen_fd >= 0) ::close(listen_fd);
    if (epfd >= 0) ::close(epfd);
  }

  int bind() {
    if (listen_fd >= 0) return port;
    addrinfo hints{}, *res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const std::string where = cat(o.host, ":", o.port);
    if (int rc = ::getaddrinfo(o.host.c_str(), std::to_string(o.port).c_str(), &hints, &res);
        rc != 0)
      throw Error(cat("serve: cannot listen on ", where, ": ", gai_strerror(rc)));
    std::string why;
    for (addrinfo* a = res; a && listen_fd < 0; a = a->ai_next) {
      int fd =
          ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) continue;
      // SO_REUSEADDR lets a restarted server bind while old connections sit in TIME_WAIT; without
      // SO_REUSEPORT a port that another socket listens on stays refused
      const int one = 1;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, o.backlog) == 0) {
        listen_fd = fd;
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
        port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      } else {
        why = std::strerror(errno);
        ::close(fd);
      }
    }
    ::freeaddrinfo(res);
    if (listen_fd < 0)
      throw Error(
          cat("serve: cannot listen on ", where, " (", why.empty() ? "no such address" : why,
              why == std::strerror(EADDRINUSE) ? ": another server has that port" : "", ")"));
    epfd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) throw Error(cat("serve: epoll_create1 failed: ", std::strerror(errno)));
    add(listen_fd, kListenerId, EPOLLIN);
    add(mailbox->fd, kMailboxId, EPOLLIN);
    return port;
  }

  void add(int fd, uint64_t id, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = id;
    ::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  }

  void watch(Conn& c) {
    epoll_event ev{};
    ev.events =
        (c.reading && !c.peer_eof ? EPOLLIN | EPOLLRDHUP : 0u) | (c.writing ? EPOLLOUT : 0u);
    ev.data.u64 = c.id;
    ::epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev);
  }

  void log(Conn& c) {
    if (!o.access_log) return;
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - c.started).count();
    char dur[32];
    std::snprintf(dur, sizeof dur, "%.1fms", ms);
    o.access_log(cat(c.peer, " \"", printable(c.method, 16), " ", printable(c.target, 200),
                     " HTTP/1.", c.minor, "\" ", c.status, " ", c.bytes_out, " ", dur));
  }

  void release(Conn& c) {
    buffered -= c.reserved;
    c.reserved = 0;
  }

  void close_conn(uint64_t id) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    Conn& c = *it->second;
    c.gone->store(true);
    release(c);
    ::epoll_ctl(epfd, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    conns.erase(it);
  }

  // ---- accepting

  void accept_all() {
    for (;;) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // out of descriptors: the backlog waits, and the listener is not watched for a moment
          // (it stays readable: watching it would spin)
          ::epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, nullptr);
          accept_paused = true;
          accept_paused_until = Clock::now() + std::chrono::milliseconds(100);
        }
        return;
      }
      if (static_cast<int>(conns.size()) >= o.max_connections && !close_oldest_idle()) {
        static const std::string busy =
            serialize(Response{503,
                               "application/json",
                               {{"Retry-After", "1"}},
                               R"({"error": "too many connections; retry shortly"})"},
                      false);
        [[maybe_unused]] ssize_t n =
            ::send(fd, busy.data(), busy.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::close(fd);
        continue;
      }
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto c = std::make_unique<Conn>();
      c->id = next_id++;
      c->fd = fd;
      c->peer = peer_name(ss);
      c->parser = RequestParser(o.limits);
      c->gone = std::make_shared<std::atomic<bool>>(false);
      c->deadline = Clock::now() + std::chrono::milliseconds(o.header_timeout_ms);
      add(fd, c->id, EPOLLIN | EPOLLRDHUP);
      conns.emplace(c->id, std::move(c));
    }
  }

  static std::string peer_name(const sockaddr_storage& ss) {
    char host[INET6_ADDRSTRLEN] = "?";
    int p = 0;
    if (ss.ss_family == AF_INET) {
      auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      p = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      return cat("[", host, "]:", ntohs(a->sin6_port));
    }
    return cat(host, ":", p);
  }

  bool close_oldest_idle() {
    Conn* oldest = nullptr;
    for (auto& [id, c] : conns)
      if (c->phase == Phase::Idle && c->in_off == c->in.size() &&
          (!oldest || c->deadline < oldest->deadline))
        oldest = c.get();
    if (!oldest) return false;
    close_conn(oldest->id);
    return true;
  }

  // ---- reading and parsing

  void on_readable(Conn& c) {
    char buf[kReadChunk];
    size_t total = 0;
    while (total < 16 * kReadChunk) {
      if (c.phase == Phase::Lingering && c.lingered >= kLingerDiscard) {
        close_conn(c.id);
        return;
      }
      if ((c.phase == Phase::Handling || c.phase == Phase::Streaming) &&
          c.in.size() - c.in_off >= kMaxPipelined) {
        c.reading = false;  // resumed when the response is done
        watch(c);
        break;
      }
      const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n > 0) {
        total += static_cast<size_t>(n);
        if (c.phase == Phase::Lingering) {
          c.lingered += static_cast<size_t>(n);
        } else {
          c.in.append(buf, static_cast<size_t>(n));
        }
        if (static_cast<size_t>(n) < sizeof buf) break;
        continue;
      }
      if (n == 0) {
        c.peer_eof = true;
        if (c.phase == Phase::Lingering) {
          close_conn(c.id);
          return;
        }
        watch(c);
        break;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      close_conn(c.id);
      return;
    }
    if (c.phase == Phase::Idle || c.phase == Phase::Reading) process(c);
  }

  // Parses what was read; hands a complete request to the handler.
  void process(Conn& c) {
    const uint64_t id = c.id;
    while (c.phase == Phase::Idle || c.phase == Phase::Reading) {
      if (c.in_off == c.in.size()) {
        if (c.peer_eof) close_conn(id);  // nothing more will come
        break;
      }
      const auto now = Clock::now();
      if (c.phase == Phase::Idle) {
        c.phase = Phase::Reading;
        c.started = now;
        c.deadline = now + std::chrono::milliseconds(o.header_timeout_ms);
        c.body_phase = c.continue_sent = c.charged_declared = false;
      }
      const size_t used = c.parser.feed(c.in.data() + c.in_off, c.in.size() - c.in_off);
      c.in_off += used;
      if (c.in_off == c.in.size()) {
        c.in.clear();
        c.in_off = 0;
      } else if (c.in_off > kMaxPipelined) {
        c.in.erase(0, c.in_off);
        c.in_off = 0;
      }
      if (c.parser.failed()) {
        fail(c, c.parser.error_status(), c.parser.error_message());
        return;
      }
      if (c.parser.headers_done()) {
        if (!c.body_phase) {
          c.body_phase = true;
          c.deadline = now + std::chrono::milliseconds(o.body_timeout_ms);
        }
        // the body's bytes count against the server's budget: declared ones at once, chunked as
        // they come
        const int64_t declared = c.parser.declared_length();
        const size_t want =
            declared > 0 ? static_cast<size_t>(declared) : c.parser.request().body.size();
        if (want > c.reserved) {
          if (buffered + (want - c.reserved) > o.max_buffered_bytes) {
            fail(c, 503, "the server is receiving too much data at once; retry shortly", true);
            return;
          }
          buffered += want - c.reserved;
          c.reserved = want;
        }
        if (c.parser.expects_continue() && !c.continue_sent) {
          c.continue_sent = true;
          send(c, "HTTP/1.1 100 Continue\r\n\r\n", false);
          if (!conns.count(id)) return;
        }
      }
      if (c.parser.done()) {
        dispatch(c);
        return;
      }
      if (used == 0) break;
    }
  }

  void dispatch(Conn& c) {
    Request r = c.parser.take();
    c.phase = Phase::Handling;
    c.method = r.method;
    c.target = r.target;
    c.minor = r.minor_version;
    c.keep_alive = r.keep_alive && !draining;
    c.head_only = r.method == "HEAD";
    c.bytes_out = 0;
    auto ex = std::make_shared<Exchange>(mailbox, c.id, std::move(r), c.peer, c.gone);
    try {
      handler(ex);
    } catch (const std::exception& e) {
      if (!ex->answered()) {
        Response res;
        res.status = 500;
        res.body = R"({"error": "internal error"})";
        ex->respond(std::move(res));
      }
    }
    ex.reset();
    drain_mailbox();  // an answer given on this thread goes out now
  }

  // An error response that ends the connection (its framing is lost, or it is refused).
  void fail(Conn& c, int status, const std::string& message, bool retry = false) {
    if (c.method.empty() || c.phase == Phase::Reading) {
      c.method = c.parser.request().method.empty() ? "-" : c.parser.request().method;
      c.target = c.parser.request().target.empty() ? "-" : c.parser.request().target;
      c.minor = c.parser.request().minor_version;
    }
    Response r = error_response(c.parser.request().path, status, message);
    if (retry) r.headers.emplace_back("Retry-After", "1");
    c.phase = Phase::Handling;
    c.keep_alive = false;
    c.head_only = false;
    c.status = status;
    c.complete_after_flush = true;
    send(c, serialize(r, false), true);
  }

  Response error_response(const std::string& path, int status, const std::string& message) const {
    Response r;
    r.status = status;
    r.body = o.error_body ? o.error_body(path, status, message)
                          : nlohmann::json{{"error", valid_utf8(message)}}.dump();
    return r;
  }

  // ---- writing

  void send(Conn& c, std::string bytes, bool counts) {
    if (counts) c.bytes_out += bytes.size();
    if (c.out_off == c.out.size()) {
      c.out = std::move(bytes);
      c.out_off = 0;
    } else {
      c.out += bytes;
    }
    flush(c);
  }

  void flush(Conn& c) {
    const uint64_t id = c.id;
    bool progressed = false;
    while (c.out_off < c.out.size()) {
      const ssize_t n =
          ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
        progressed = true;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (progressed || !c.writing) c.write_since = Clock::now();
        if (!c.writing) {
          c.writing = true;
          watch(c);
        }
        return;
      }
      close_conn(id);  // the client is gone
      return;
    }
    c.out.clear();
    c.out_off = 0;
    if (c.writing) {
      c.writing = false;
      watch(c);
    }
    if (c.complete_after_flush) finish_response(c);
  }

  void finish_response(Conn& c) {
    c.complete_after_flush = false;
    log(c);
    release(c);
    c.method.clear();
    if (!c.keep_alive) {
      linger(c);
      return;
    }
    c.phase = Phase::Idle;
    c.deadline = Clock::now() + std::chrono::milliseconds(o.idle_timeout_ms);
    if (!c.reading) {
      c.reading = true;
      watch(c);
    }
    if (c.in_off < c.in.size() || c.peer_eof)
      ready.push_back(c.id);  // a pipelined request already read
  }

  // Half-closes and reads (and drops) what the client still sends for a moment, so that it reads
  // the response instead of a reset caused by unread data.
  void linger(Conn& c) {
    c.phase = Phase::Lingering;
    c.in.clear();
    c.in_off = 0;
    ::shutdown(c.fd, SHUT_WR);
    if (c.peer_eof) {
      close_conn(c.id);
      return;
    }
    c.reading = true;
    c.deadline = Clock::now() + std::chrono::milliseconds(kLingerMs);
    watch(c);
  }

  void drain_mailbox() {
    for (Mailbox::Message& m : mailbox->take()) {
      auto it = conns.find(m.conn);
      if (it == conns.end()) continue;  // the client left
      Conn& c = *it->second;
      if (c.phase != Phase::Handling && c.phase != Phase::Streaming) continue;
      switch (m.kind) {
        case Mailbox::Kind::Full:
          c.status = m.response.status;
          c.keep_alive = c.keep_alive && !draining;
          c.complete_after_flush = true;
          send(c, serialize(m.response, c.keep_alive, c.head_only), true);
          break;
        case Mailbox::Kind::Head:
          c.status = m.response.status;
          c.phase = Phase::Streaming;
          send(c, serialize_stream_head(m.response, c.keep_alive), true);
          break;
        case Mailbox::Kind::Chunk:
          send(c, chunk(m.data), true);
          break;
        case Mailbox::Kind::End:
          c.complete_after_flush = true;
          send(c, chunk(""), true);
          break;
      }
    }
  }

  // ---- deadlines and the drain

  void sweep() {
    const auto now = Clock::now();
    std::vector<uint64_t> expired;
    for (auto& [id, c] : conns) {
      if (c->writing && now - c->write_since > std::chrono::milliseconds(o.write_timeout_ms)) {
        expired.push_back(id);
        continue;
      }
      if (now < c->deadline) continue;
      if (c->phase == Phase::Idle || c->phase == Phase::Lingering || c->phase == Phase::Reading)
        expired.push_back(id);
    }
    for (uint64_t id : expired) {
      auto it = conns.find(id);
      if (it == conns.end()) continue;
      Conn& c = *it->second;
      if (c.phase == Phase::Reading && !c.writing) {
        fail(c, 408,
             c.body_phase
                 ? cat("request body not received within ", o.body_timeout_ms / 1000.0, " s")
                 : cat("request header not received within ", o.header_timeout_ms / 1000.0, " s"));
      } else {
        close_conn(id);
      }
    }
  }

  void run_ready() {
    while (!ready.empty()) {
      const uint64_t id = ready.back();
      ready.pop_back();
      auto it = conns.find(id);
      if (it != conns.end() && it->second->phase == Phase::Idle) process(*it->second);
    }
  }

  void begin_drain() {
    draining = true;
    drain_deadline = Clock::now() + std::chrono::milliseconds(o.drain_timeout_ms);
    if (listen_fd >= 0) {
      if (!accept_paused) ::epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, nullptr);
      ::close(listen_fd);
      listen_fd = -1;
    }
    std::vector<uint64_t> idle;
    for (auto& [id, c] : conns)
      if (c->phase == Phase::Idle && c->in_off == c->in.size()) idle.push_back(id);
    for (uint64_t id : idle) close_conn(id);
  }

  void run() {
    if (listen_fd < 0) bind();
    std::vector<epoll_event> events(256);
    auto last_sweep = Clock::now();
    for (;;) {
      if (mailbox->stop_requested.load() && !draining) begin_drain();
      if (draining && (conns.empty() || Clock::now() > drain_deadline)) break;
      run_ready();
      if (accept_paused && !draining && Clock::now() > accept_paused_until) {
        accept_paused = false;
        add(listen_fd, kListenerId, EPOLLIN);
      }
      const int n = ::epoll_wait(epfd, events.data(), static_cast<int>(events.size()), 50);
      if (n < 0 && errno != EINTR)
        throw Error(cat("serve: epoll_wait failed: ", std::strerror(errno)));
      for (int i = 0; i < n; ++i) {
        const uint64_t id = events[static_cast<size_t>(i)].data.u64;
        const uint32_t ev = events[static_cast<size_t>(i)].events;
        if (id == kListenerId) {
          if (!draining) accept_all();
          continue;
        }
        if (id == kMailboxId) {
          drain_mailbox();
          continue;
        }
        auto it = conns.find(id);
        if (it == conns.end()) continue;
        Conn& c = *it->second;
        if (ev &
            (EPOLLERR | EPOLLHUP)) {  // reset, or closed both ways: nothing more can be delivered
          close_conn(id);
          continue;
        }
        if (ev & EPOLLOUT) {
          flush(c);
          if (!conns.count(id)) continue;
        }
        if (ev & (EPOLLIN | EPOLLRDHUP)) on_readable(c);
      }
      if (Clock::now() - last_sweep > std::chrono::milliseconds(50)) {
        sweep();
        last_sweep = Clock::now();
      }
    }
    std::vector<uint64_t> left;
    for (auto& [id, c] : conns) left.push_back(id);
    for (uint64_t id : left) close_conn(id);
  }
};

HttpServer::HttpServer(const ServerOptions& options, Handler handler)
    : impl_(std::make_unique<Impl>(options, std::move(handler))) {}
HttpServer::~HttpServer() = default;
int HttpServer::bind() {
  return impl_->bind();
}
void HttpServer::run() {
  impl_->run();
}
int HttpServer::port() const {
  return impl_->port;
}

void HttpServer::stop() noexcept {
  impl_->mailbox->stop_requested.store(true);
  impl_->mailbox->wake();
}

}  // namespace emovlm::http
