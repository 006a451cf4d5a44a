// `emovlm serve` against hostile and unusual clients, over raw loopback sockets: slow clients,
// chunked and unlabelled bodies, pipelining, keep-alive, odd names and sizes, the port and signals.
// Each test asserts what the server does, with generous deadlines, never how fast.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/image/image.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/serve/prediction_server.h"
#include "raw_http.h"
#include "serve_bundle.h"
#include "test_util.h"

extern char** environ;

using namespace emovlm;
using namespace emovlm::test;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The bundle's predictor, loaded once per test program.
Predictor& predictor() {
  static Predictor p(serve_bundle(), ComputeDevice::cpu());
  return p;
}

// The test images the bundle was not trained on, sorted.
std::vector<std::string> test_images() {
  std::vector<std::string> out;
  for (const auto& e :
       fs::recursive_directory_iterator(fs::path(serve_bundle()).parent_path() / "data" / "test"))
    if (e.is_regular_file()) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A server on a free loopback port, run on a thread of its own, stopped however the test ends.
struct Serving {
  PredictionServer server;
  int port;
  std::thread thread;
  explicit Serving(const ServeOptions& o)
      : server(predictor(), o), port(server.bind()), thread([this] { server.run(); }) {}
  ~Serving() {
    server.stop();
    thread.join();
  }
};

ServeOptions loopback() {
  ServeOptions o;
  o.port = 0;
  return o;
}

std::string multipart(const std::string& boundary, const std::string& field,
                      const std::string& filename, const std::string& content) {
  return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + field +
         "\"; filename=\"" + filename + "\"\r\nContent-Type: application/octet-stream\r\n\r\n" +
         content + "\r\n--" + boundary + "--\r\n";
}

std::string post_multipart(const std::string& filename, const std::string& content) {
  const std::string b = "emovlmTestBoundary7MA4YWxk";
  return raw_request("POST", "/predict", multipart(b, "image", filename, content),
                     "Content-Type: multipart/form-data; boundary=" + b + "\r\n");
}

json body_json(const RawResponse& r) {
  try {
    return json::parse(r.body);
  } catch (const std::exception&) {
    return json{{"unparsable_body", r.body.substr(0, 200)}};
  }
}

std::string error_of(const RawResponse& r) {
  json j = body_json(r);
  if (j.contains("error") && j["error"].is_string()) return j["error"];
  if (j.contains("error") && j["error"].is_object()) return j["error"].value("message", "");
  return j.dump();
}

// A noisy PNG: incompressible, so w x h pixels are about 3 w h bytes on the wire.
std::string noisy_png(int w, int h, uint32_t seed) {
  RgbImage img(w, h);
  for (uint8_t& v : img.pixels) {
    seed = seed * 1664525u + 1013904223u;
    v = static_cast<uint8_t>(seed >> 24);
  }
  return encode_png(img);
}

}  // namespace

// Connections that trickle their header a byte at a time hold no thread: normal requests are
// answered while they go on, and each of them is closed once its header deadline passes.
TEST(Serve, SlowClientsDoNotBlockOthers) {
  Serving s(loopback());
  const std::string png = read_file(test_images()[0]);
  std::atomic<bool> done{false};
  std::vector<std::thread> slow;
  std::atomic<int> slow_closed{0};
  for (int i = 0; i < 64; ++i)
    slow.emplace_back([&] {
      RawConn c(s.port);
      const std::string req =
          "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + std::string(200, 'a') +
          "\r\n\r\n";
      for (size_t k = 0; k < req.size() && !done; ++k) {
        if (!c.send_all(req.substr(k, 1))) {
          ++slow_closed;
          return;
        }
        for (int t = 0; t < 10 && !done; ++t)
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    });
  std::this_thread::sleep_for(std::chrono::seconds(2));  // the slow ones connected first
  int answered = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  for (int i = 0; i < 5 && Clock::now() < deadline; ++i) {
    auto r =
        roundtrip(s.port, raw_request("POST", "/predict", png, "Content-Type: image/png\r\n"), 30);
    if (r && r->status == 200) ++answered;
  }
  done = true;
  for (auto& t : slow) t.join();
  EXPECT_EQ(answered, 5) << "normal requests were starved by slow clients";
}

// A slow client's header has a deadline: the connection gets 408 and is closed.
TEST(Serve, HeaderDeadlineClosesSlowClient) {
  ServeOptions o = loopback();
  o.header_timeout_ms = 1000;
  Serving s(o);
  RawConn c(s.port);
  ASSERT_TRUE(c.send_all("GET /health HTTP/1.1\r\nHost: x\r\n"));  // never finished
  auto r = c.read_response(60);
  ASSERT_TRUE(r) << "the server kept a connection with an unfinished header open";
  EXPECT_EQ(r->status, 408);
  EXPECT_NE(error_of(*r).find("header"), std::string::npos) << r->body;
  EXPECT_TRUE(c.wait_closed(60));
}

// A chunked body over the limit: 413 as soon as the limit is passed, without reading the rest.
TEST(Serve, ChunkedBodyOverLimitIs413WithoutReadingIt) {
  ServeOptions o = loopback();
  o.max_bytes = 1 << 20;
  Serving s(o);
  RawConn c(s.port);
  ASSERT_TRUE(
      c.send_all("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 "image/png\r\nTransfer-Encoding: chunked\r\n\r\n"));
  const size_t total = size_t{256} << 20;  // 256 MB offered
  std::atomic<size_t> sent{0};
  std::thread sender([&] {
    const std::string chunk = "10000\r\n" + std::string(0x10000, 'x') + "\r\n";
    while (sent < total) {
      if (!c.send_all(chunk)) return;  // the server closed: it read no more
      sent += 0x10000;
    }
    c.send_all("0\r\n\r\n");
  });
  auto r = c.read_response(120);
  ::shutdown(c.fd(), SHUT_RDWR);  // the sender stops if it is still blocked in send
  sender.join();
  ASSERT_TRUE(r) << "no response";
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(error_of(*r).find("1 MB"), std::string::npos) << r->body;
  EXPECT_LT(sent.load(), total / 4) << "the server read far more than the limit";
}

// Content-Length over the limit: 413 before the body is read.
TEST(Serve, DeclaredBodyOverLimitIs413) {
  ServeOptions o = loopback();
  o.max_bytes = 1 << 20;
  Serving s(o);
  RawConn c(s.port);
  ASSERT_TRUE(c.send_all("POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n"));
  auto r = c.read_response(60);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(r->header("connection"), "close");
}

// An image sent as the body with no Content-Type (or curl --data-binary's form type) is an
// image up to the size limit, not a form capped at 8 KB.
TEST(Serve, RawBodyWithoutContentTypeIsAnImage) {
  Serving s(loopback());
  const std::string png = noisy_png(64, 64, 7);
  ASSERT_GT(png.size(), 8u << 10);
  auto bare = roundtrip(s.port, raw_request("POST", "/predict", png));
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->status, 200) << bare->body;
  EXPECT_TRUE(body_json(*bare).contains("emotion")) << bare->body;
  auto form = roundtrip(s.port, raw_request("POST", "/predict", png,
                                            "Content-Type: application/x-www-form-urlencoded\r\n"));
  ASSERT_TRUE(form);
  EXPECT_EQ(form->status, 200) << form->body;
}

// Requests sent together in one write are all answered, in order, on the one connection.
TEST(Serve, PipelinedRequestsAnsweredInOrder) {
  Serving s(loopback());
  const auto images = test_images();
  std::string all;
  for (int i = 0; i < 3; ++i)
    all += raw_request("POST", "/predict", read_file(images[static_cast<size_t>(i)]),
                       "Content-Type: image/png\r\n");
  all += raw_request("GET", "/health", "");
  RawConn c(s.port);
  ASSERT_TRUE(c.send_all(all));
  for (int i = 0; i < 3; ++i) {
    auto r = c.read_response(60);
    ASSERT_TRUE(r) << "response " << i << " missing";
    ASSERT_EQ(r->status, 200) << i << ": " << r->body;
    json want = predictor().predict(images[static_cast<size_t>(i)]);
    json got = body_json(*r);
    EXPECT_EQ(got["emotion"], want["emotion"]) << i;
    EXPECT_EQ(got["vlm"]["probabilities"].dump(), want["vlm"]["probabilities"].dump()) << i;
  }
  auto h = c.read_response(60);
  ASSERT_TRUE(h) << "the GET after the POSTs was not answered";
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(body_json(*h)["status"], "ok");
}

// Each response goes out in one write with TCP_NODELAY, so on a kept-alive connection every
// response arrives whole (header and body together), none held back waiting for an ACK.
TEST(Serve, KeepAliveResponsesArriveWhole) {
  Serving s(loopback());
  RawConn c(s.port);
  const std::string png = read_file(test_images()[1]);
  int whole = 0;
  for (int i = 0; i < 20; ++i) {
    const bool predict = i % 4 == 3;
    ASSERT_TRUE(c.send_all(predict
                               ? raw_request("POST", "/predict", png, "Content-Type: image/png\r\n")
                               : raw_request("GET", "/health", "")));
    const std::string first = c.recv_some(60);  // the first segment that arrives
    ASSERT_FALSE(first.empty()) << "request " << i << " not answered";
    const size_t end = first.find("\r\n\r\n");
    ASSERT_NE(end, std::string::npos);
    const size_t cl = first.find("Content-Length: ");
    ASSERT_NE(cl, std::string::npos);
    const size_t n = std::stoul(first.substr(cl + 16));
    if (first.size() == end + 4 + n) {
      ++whole;
    } else {  // read the rest so that the next request starts clean
      std::string rest = first;
      while (rest.size() < end + 4 + n) rest += c.recv_some(60);
    }
  }
  EXPECT_EQ(whole, 20) << "responses came in pieces (header and body in separate writes)";
}

// A multipart file name that is not UTF-8: the image is still scored; the name comes back with
// U+FFFD in place of the bad bytes; no internals in the headers.
TEST(Serve, NonUtf8FilenameIsScored) {
  Serving s(loopback());
  auto r = roundtrip(s.port, post_multipart("caf\xe9\xff.png", read_file(test_images()[2])));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  json j = body_json(*r);
  EXPECT_EQ(j.value("image", ""), "caf\xEF\xBF\xBD\xEF\xBF\xBD.png") << r->body;
  for (const auto& [name, value] : r->headers)
    EXPECT_EQ(name.find("exception"), std::string::npos) << name;
}

// A 1x4000 image cannot go through the VLM (aspect ratio over 200): a client error naming the
// upload, not a 500.
TEST(Serve, ExtremeAspectRatioIsClientErrorNamingTheUpload) {
  Serving s(loopback());
  auto r = roundtrip(s.port, post_multipart("thin.png", encode_png(RgbImage(1, 4000))));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status / 100, 4) << r->status << " " << r->body;
  EXPECT_NE(error_of(*r).find("thin.png"), std::string::npos) << r->body;
  EXPECT_NE(error_of(*r).find("aspect ratio"), std::string::npos) << r->body;
}

// A malformed request line is 400 and a request target over the limit 414, each saying so.
TEST(Serve, BadRequestAndLongTargetSaySo) {
  Serving s(loopback());
  auto bad = roundtrip(s.port, "GARBAGE\r\n\r\n");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(error_of(*bad).find("request line"), std::string::npos) << bad->body;
  auto bad_version = roundtrip(s.port, "GET / HTTP/9.9\r\n\r\n");
  ASSERT_TRUE(bad_version);
  EXPECT_EQ(bad_version->status / 100, 4);
  EXPECT_EQ(error_of(*bad_version).find("no such endpoint"), std::string::npos)
      << bad_version->body;
  auto long_target =
      roundtrip(s.port, "GET /" + std::string(20000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(long_target);
  EXPECT_EQ(long_target->status, 414);
  EXPECT_NE(error_of(*long_target).find("request target"), std::string::npos) << long_target->body;
}

// A second server on a port already served is refused (no SO_REUSEPORT sharing).
TEST(Serve, SecondServerOnUsedPortIsRefused) {
  Serving s(loopback());
  ServeOptions o = loopback();
  o.port = s.port;
  PredictionServer second(predictor(), o);
  try {
    second.bind();
    FAIL() << "a second server bound port " << s.port;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(s.port)), std::string::npos) << e.what();
  }
}

// A 35-byte GIF that declares a 9000x9000 canvas is refused by its declared size, before any
// pixel is allocated: 413 naming the upload and the size.
TEST(Serve, DecompressionBombRefusedByDeclaredSize) {
  Serving s(loopback());
  std::string gif = "GIF89a";
  gif += std::string("\x28\x23\x28\x23", 4);                        // 9000 x 9000 (little-endian)
  gif += std::string("\x80\x00\x00", 3);                            // a global palette of 2 colours
  gif += std::string("\x00\x00\x00\xff\xff\xff", 6);                // black, white
  gif += std::string(",\x00\x00\x00\x00\x01\x00\x01\x00\x00", 10);  // one 1x1 frame at 0,0
  gif += std::string("\x02\x02\x44\x01\x00", 5);                    // LZW: clear, 0, end
  gif += ";";
  ASSERT_EQ(gif.size(), 35u);
  auto r = roundtrip(s.port, post_multipart("bomb.gif", gif));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413) << r->body;
  EXPECT_NE(error_of(*r).find("bomb.gif"), std::string::npos) << r->body;
  EXPECT_NE(error_of(*r).find("9000x9000"), std::string::npos) << r->body;
}

// SIGTERM: the server stops accepting, finishes the request in flight and exits 0.
TEST(Serve, SigtermFinishesInFlightRequests) {
  TempDir dir;
  const std::string out = dir / "out.txt";
  std::vector<std::string> args = {EMOVLM_CLI_PATH, "serve", "--bundle",        serve_bundle(),
                                   "--port",        "0",     "--device",        "cpu",
                                   "--batch",       "2",     "--batch-wait-ms", "3000"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid > 0 && ::kill(pid, 0) == 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reaper{pid};
  // the port from the line the server prints once it listens
  int port = 0;
  for (int i = 0; i < 600 && port == 0; ++i) {
    const std::string text = file_exists(out) ? read_file(out) : "";
    const size_t at = text.find("http://127.0.0.1:");
    if (at != std::string::npos && text.find(':', at + 17) != std::string::npos)
      port = std::atoi(text.c_str() + at + 17);
    if (port == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GT(port, 0) << "the server did not start";
  RawConn c(port);
  ASSERT_TRUE(c.send_all(
      raw_request("POST", "/predict", read_file(test_images()[3]), "Content-Type: image/png\r\n")));
  // the request is in flight once /health counts it (waiting for a batch partner)
  for (int i = 0; i < 50; ++i) {
    auto h = roundtrip(port, raw_request("GET", "/health", ""), 10);
    if (h && body_json(*h).value("in_flight", 0) >= 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  auto r = c.read_response(60);
  ASSERT_TRUE(r) << "the request in flight was cut off";
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_TRUE(body_json(*r).contains("emotion"));
  int status = 0;
  for (int i = 0; i < 600; ++i) {
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      reaper.pid = 0;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(reaper.pid, 0) << "the server did not exit after SIGTERM";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_FALSE(RawConn(port).connected()) << "still accepting after it exited";
}
