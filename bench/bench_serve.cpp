// Load on a running `emovlm serve` (bench/serve.sh starts it): keep-alive clients, slow clients,
// and the decompression-bomb mix. Plain blocking sockets, one thread per connection, loopback only.
//   bench_serve load  PORT IMAGE CONCURRENCY REQUESTS   requests/s and latency percentiles (IMAGE
//   "-":
//                                                       GET /health instead of predictions)
//   bench_serve slow  PORT IMAGE SLOW NORMAL            NORMAL requests while SLOW clients trickle
//   headers bench_serve bomb  PORT FILE COPIES                  COPIES uploads of FILE at once:
//   their statuses
// Each prints one JSON line.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

int connect_to(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

bool send_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads one Content-Length response; returns its status, or -1 (closed, timed out, malformed).
int read_response(int fd, std::string& buf, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    const size_t end = buf.find("\r\n\r\n");
    if (end != std::string::npos) {
      const size_t cl = buf.find("Content-Length: ");
      if (cl == std::string::npos || cl > end) return -1;
      const size_t n = std::stoul(buf.substr(cl + 16));
      if (buf.size() >= end + 4 + n) {
        const int status = std::atoi(buf.c_str() + 9);
        buf.erase(0, end + 4 + n);
        return status;
      }
    }
    const int left = static_cast<int>(
        std::chrono::duration<double, std::milli>(deadline - Clock::now()).count());
    if (left <= 0) return -1;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, left) <= 0) return -1;
    char tmp[65536];
    const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return -1;
    buf.append(tmp, static_cast<size_t>(n));
  }
}

std::string post(const std::string& body, const std::string& path = "/predict") {
  return "POST " + path +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
         "application/octet-stream\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "bench_serve: cannot read %s\n", path.c_str());
    std::exit(2);
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1,
                    static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5))];
}

// CONCURRENCY kept-alive connections share REQUESTS predictions of IMAGE.
void load(int port, const std::string& image, int concurrency, int requests) {
  const std::string req =
      image == "-" ? "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" : post(image);
  std::atomic<int> next{0}, errors{0};
  std::mutex mu;
  std::vector<double> latencies;
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < concurrency; ++c)
    threads.emplace_back([&] {
      int fd = connect_to(port);
      std::string buf;
      std::vector<double> mine;
      while (next++ < requests) {
        if (fd < 0) fd = connect_to(port);
        const auto s = Clock::now();
        const int status = fd >= 0 && send_all(fd, req) ? read_response(fd, buf, 120) : -1;
        if (status != 200) {
          ++errors;
          if (fd >= 0) ::close(fd);
          fd = -1;
          buf.clear();
          continue;
        }
        mine.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
      }
      if (fd >= 0) ::close(fd);
      std::lock_guard<std::mutex> l(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  for (auto& t : threads) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf(
      "{\"mode\": \"load\", \"concurrency\": %d, \"requests\": %d, \"ok\": %zu, \"errors\": %d, "
      "\"seconds\": %.2f, "
      "\"rps\": %.2f, \"p50_ms\": %.1f, \"p99_ms\": %.1f}\n",
      concurrency, requests, latencies.size(), errors.load(), secs,
      static_cast<double>(latencies.size()) / secs, percentile(latencies, 0.5),
      percentile(latencies, 0.99));
}

// SLOW connections send a header a byte every 3 s; meanwhile NORMAL predictions, one after the
// other.
void slow(int port, const std::string& image, int slow_clients, int normal) {
  std::atomic<bool> done{false};
  std::atomic<int> cut{0};
  std::vector<std::thread> slow;
  for (int i = 0; i < slow_clients; ++i)
    slow.emplace_back([&] {
      const int fd = connect_to(port);
      const std::string h =
          "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + std::string(100, 'a') + "\r\n\r\n";
      for (size_t k = 0; k < h.size() && !done; ++k) {
        if (!send_all(fd, h.substr(k, 1))) {
          ++cut;
          break;
        }
        for (int t = 0; t < 30 && !done; ++t)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      ::close(fd);
    });
  std::this_thread::sleep_for(std::chrono::seconds(1));
  std::vector<double> lat;
  int ok = 0;
  const auto t0 = Clock::now();
  for (int i = 0; i < normal; ++i) {
    const int fd = connect_to(port);
    std::string buf;
    const auto s = Clock::now();
    if (fd >= 0 && send_all(fd, post(image)) && read_response(fd, buf, 50) == 200) {
      ++ok;
      lat.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s).count());
    }
    if (fd >= 0) ::close(fd);
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  done = true;
  for (auto& t : slow) t.join();
  std::printf(
      "{\"mode\": \"slow\", \"slow_clients\": %d, \"normal\": %d, \"served\": %d, \"seconds\": "
      "%.2f, "
      "\"p50_ms\": %.1f, \"max_ms\": %.1f}\n",
      slow_clients, normal, ok, secs, percentile(lat, 0.5),
      lat.empty() ? 0.0 : *std::max_element(lat.begin(), lat.end()));
}

// COPIES uploads of FILE at the same moment; their statuses counted.
void bomb(int port, const std::string& file, int copies) {
  const std::string req = post(file);
  std::mutex mu;
  std::map<int, int> statuses;
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int i = 0; i < copies; ++i)
    threads.emplace_back([&] {
      const int fd = connect_to(port);
      std::string buf;
      const int status = fd >= 0 && send_all(fd, req) ? read_response(fd, buf, 120) : -1;
      if (fd >= 0) ::close(fd);
      std::lock_guard<std::mutex> l(mu);
      ++statuses[status];
    });
  for (auto& t : threads) t.join();
  std::string s;
  for (const auto& [k, v] : statuses)
    s += (s.empty() ? "" : ", ") + ("\"" + std::to_string(k) + "\": " + std::to_string(v));
  std::printf(
      "{\"mode\": \"bomb\", \"bytes\": %zu, \"copies\": %d, \"seconds\": %.2f, \"statuses\": "
      "{%s}}\n",
      file.size(), copies, std::chrono::duration<double>(Clock::now() - t0).count(), s.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "load" && argc == 6) {
    load(std::atoi(argv[2]), std::string(argv[3]) == "-" ? "-" : read_file(argv[3]),
         std::atoi(argv[4]), std::atoi(argv[5]));
  } else if (mode == "slow" && argc == 6) {
    slow(std::atoi(argv[2]), read_file(argv[3]), std::atoi(argv[4]), std::atoi(argv[5]));
  } else if (mode == "bomb" && argc == 5) {
    bomb(std::atoi(argv[2]), read_file(argv[3]), std::atoi(argv[4]));
  } else {
    std::printf(
        "bench_serve: a load client for a running `emovlm serve`; bench/serve.sh runs it.\n"
        "usage: bench_serve load PORT IMAGE|- CONCURRENCY REQUESTS | slow PORT IMAGE SLOW NORMAL | "
        "bomb PORT FILE COPIES\n");
    return mode.empty() ? 0 : 2;
  }
  return 0;
}
