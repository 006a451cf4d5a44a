// The server's protocol layer without a model: the request parser's limits and framing, multipart
// bodies, the OpenAI request parser and stop strings, and the epoll server with a toy handler
// (connection cap, deadlines, 100-continue, streaming, drain). Deadlines are generous; nothing
// asserts speed.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "emovlm/serve/http.h"
#include "emovlm/serve/http_server.h"
#include "emovlm/serve/multipart.h"
#include "emovlm/serve/openai.h"
#include "serve/raw_http.h"

using namespace emovlm;
using namespace emovlm::http;
using emovlm::test::raw_request;
using emovlm::test::RawConn;

namespace {

// Feeds `bytes` in pieces of `step`; returns the parser after it finished, failed or ran out.
RequestParser parse(const std::string& bytes, size_t step = 1000000, Limits limits = {}) {
  RequestParser p(limits);
  size_t off = 0;
  while (off < bytes.size() && !p.done() && !p.failed())
    off += p.feed(bytes.data() + off, std::min(step, bytes.size() - off));
  return p;
}

}  // namespace

TEST(HttpParser, ParsesInAnyPieces) {
  const std::string req =
      "POST /predict?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: image/png\r\nContent-Length: "
      "5\r\n\r\nhello";
  for (size_t step : {1u, 2u, 7u, 1000u}) {
    RequestParser p = parse(req, step);
    ASSERT_TRUE(p.done()) << step;
    Request r = p.take();
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.path, "/predict");
    EXPECT_EQ(r.query, "x=1");
    EXPECT_EQ(r.body, "hello");
    ASSERT_NE(r.header("content-type"), nullptr);
    EXPECT_EQ(*r.header("content-type"), "image/png");
    EXPECT_TRUE(r.keep_alive);
  }
}

TEST(HttpParser, StopsAtTheEndOfOneRequest) {
  const std::string two = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
  RequestParser p;
  const size_t used = p.feed(two.data(), two.size());
  ASSERT_TRUE(p.done());
  EXPECT_EQ(two.substr(used), "GET /b HTTP/1.0\r\n\r\n");
  EXPECT_EQ(p.take().path, "/a");
  p.feed(two.data() + used, two.size() - used);
  ASSERT_TRUE(p.done());
  Request b = p.take();
  EXPECT_EQ(b.path, "/b");
  EXPECT_FALSE(b.keep_alive);  // HTTP/1.0 without keep-alive
}

TEST(HttpParser, ChunkedBodies) {
  RequestParser p = parse(
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n2\r\nef\r\n0\r\nT: "
      "1\r\n\r\n",
      3);
  ASSERT_TRUE(p.done()) << p.error_message();
  EXPECT_EQ(p.take().body, "abcdef");
  EXPECT_EQ(
      parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdXY").error_status(),
      400);
  EXPECT_EQ(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").error_status(),
            400);
}

TEST(HttpParser, EveryLimitHasItsStatus) {
  Limits l;
  l.max_body = 10;
  l.max_target = 50;
  l.max_header_bytes = 200;
  RequestParser chunked =
      parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n", 1000, l);
  EXPECT_EQ(chunked.error_status(), 413);
  EXPECT_NE(chunked.error_message().find("10 bytes"), std::string::npos) << chunked.error_message();
  EXPECT_EQ(parse("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 1000, l).error_status(), 413);
  EXPECT_EQ(parse("GET /" + std::string(60, 'a') + " HTTP/1.1\r\n\r\n", 1000, l).error_status(),
            414);
  EXPECT_EQ(parse("GET /" + std::string(5000, 'a'), 1000, l).error_status(),
            414);  // before the line ends
  EXPECT_EQ(
      parse("GET / HTTP/1.1\r\nX: " + std::string(300, 'a') + "\r\n\r\n", 1000, l).error_status(),
      431);
}

TEST(HttpParser, MalformedRequestsAre400WithAReason) {
  auto msg = [](const std::string& req) {
    RequestParser p = parse(req);
    EXPECT_TRUE(p.failed()) << req;
    return std::to_string(p.error_status()) + " " + p.error_message();
  };
  EXPECT_EQ(msg("GARBAGE\r\n\r\n").rfind("400 malformed request line", 0), 0u);
  EXPECT_NE(msg("GET / HTTP/2.0\r\n\r\n").find("unsupported HTTP version"), std::string::npos);
  EXPECT_NE(msg("GET / HTTP/1.1\nHost: x\n\n").find("CRLF"), std::string::npos);
  EXPECT_NE(msg("GET http://x/ HTTP/1.1\r\n\r\n").find("path starting with '/'"),
            std::string::npos);
  EXPECT_NE(msg("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
                .find("both"),
            std::string::npos);
  EXPECT_NE(
      msg("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n").find("conflicting"),
      std::string::npos);
  EXPECT_NE(msg("POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n").find("invalid Content-Length"),
            std::string::npos);
  EXPECT_NE(msg("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
                .find("unsupported Transfer-Encoding"),
            std::string::npos);
  EXPECT_NE(msg("GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n").find("folding"), std::string::npos);
  EXPECT_EQ(msg("GET / HTTP/1.1\r\nExpect: magic\r\n\r\n").substr(0, 3), "417");
}

TEST(HttpParser, ResponsesAreOneBuffer) {
  Response r{200, "application/json", {{"Retry-After", "1"}}, "{}"};
  EXPECT_EQ(serialize(r, true),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: "
            "keep-alive\r\n"
            "Content-Length: 2\r\n\r\n{}");
  EXPECT_EQ(chunk("abc"), "3\r\nabc\r\n");
  EXPECT_EQ(chunk(""), "0\r\n\r\n");
}

TEST(HttpParser, InvalidUtf8BecomesReplacementCharacters) {
  EXPECT_EQ(valid_utf8("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(valid_utf8("caf\xe9\xff.png"), "caf\xEF\xBF\xBD\xEF\xBF\xBD.png");
  EXPECT_EQ(valid_utf8("\xed\xa0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // a surrogate
  EXPECT_EQ(valid_utf8("\xc0\xaf"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong
  EXPECT_EQ(printable("a\"b\n"), "a\\x22b\\x0a");
}

TEST(Multipart, PartsAndFileNames) {
  const std::string body =
      "ignored preamble\r\n--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n"
      "--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\\\"b.png\"; "
      "filename*=UTF-8''na%C3%AFve.png\r\n"
      "Content-Type: image/png\r\n\r\n\x89PNG\r\n--B--\r\n";
  auto parts = parse_multipart(body, "multipart/form-data; boundary=B");
  ASSERT_EQ(parts.size(), 2u);
  EXPECT_EQ(parts[0].name, "note");
  EXPECT_EQ(parts[0].content, "hi");
  EXPECT_EQ(parts[1].name, "image");
  EXPECT_EQ(parts[1].filename, "na\xc3\xafve.png");  // filename* wins
  EXPECT_EQ(parts[1].content_type, "image/png");
  EXPECT_EQ(parts[1].content, "\x89PNG");
  EXPECT_TRUE(is_multipart("Multipart/Form-Data; boundary=x"));
  EXPECT_FALSE(is_multipart("image/png"));
  EXPECT_THROW(parse_multipart(body, "multipart/form-data"), HttpError);  // no boundary
  EXPECT_THROW(
      parse_multipart("--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunfinished",
                      "multipart/form-data; boundary=B"),
      HttpError);
}

TEST(OpenAi, ParsesChatRequests) {
  const std::string body = R"({"model": "m", "messages": [
      {"role": "developer", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "hi"},
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}],
      "temperature": 0.5, "top_p": 0.9, "max_completion_tokens": 7, "seed": -3, "stop": "END",
      "stream": true, "stream_options": {"include_usage": true}, "user": "ignored"})";
  openai::ChatRequest r = openai::parse_chat_request(body);
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  ASSERT_EQ(r.messages[1].parts.size(), 2u);
  EXPECT_EQ(r.messages[1].parts[1].kind, ChatPart::Kind::Image);
  ASSERT_EQ(r.images.size(), 1u);
  EXPECT_EQ(r.images[0].bytes, "hello");
  EXPECT_EQ(r.images[0].where, "messages[1].content[1].image_url");
  EXPECT_EQ(*r.temperature, 0.5);
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_EQ(*r.seed, -3);
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(r.stream && r.include_usage);
}

TEST(OpenAi, BadRequestsNameTheField) {
  auto param = [](const std::string& body) {
    try {
      openai::parse_chat_request(body);
    } catch (const HttpError& e) {
      EXPECT_EQ(e.status, 400) << body;
      return e.param;
    }
    return std::string("accepted");
  };
  const std::string m = R"("messages": [{"role": "user", "content": "x"}])";
  EXPECT_EQ(param("not json"), "");
  EXPECT_EQ(param(R"({"messages": []})"), "messages");
  EXPECT_EQ(param(R"({"messages": [{"role": "tool", "content": "x"}]})"), "messages[0].role");
  EXPECT_EQ(param("{" + m + R"(, "temperature": 3})"), "temperature");
  EXPECT_EQ(param("{" + m + R"(, "temperature": "hot"})"), "temperature");
  EXPECT_EQ(param("{" + m + R"(, "top_p": 0})"), "top_p");
  EXPECT_EQ(param("{" + m + R"(, "max_tokens": 0})"), "max_tokens");
  EXPECT_EQ(param("{" + m + R"(, "stop": ["a", "b", "c", "d", "e"]})"), "stop");
  EXPECT_EQ(param("{" + m + R"(, "n": 2})"), "n");
  EXPECT_EQ(param("{" + m + R"(, "tools": [{"type": "function"}]})"), "tools");
  EXPECT_EQ(
      param(
          R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]})"),
      "messages[0].content[0].image_url");
  EXPECT_EQ(
      param(
          R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}]})"),
      "messages[0].content[0].image_url");
  EXPECT_EQ(param(R"({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]})"),
            "messages[0].content[0].type");
  EXPECT_EQ(param("{" + m + "}"), "accepted");
  const nlohmann::json e = openai::error_body(400, "bad", "temperature");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["param"], "temperature");
  EXPECT_TRUE(e["error"]["code"].is_null());
}

// Streamed text never shows a stop string, nor the start of one that then completes.
TEST(OpenAi, StopScannerHoldsBackWhatMayBeginAStop) {
  openai::StopScanner s({"END", "\n\n"});
  std::string sent;
  for (const char* t :
       {"Hello E", "Hello EN", "Hello ENx", "Hello ENx and\n", "Hello ENx and\n\nmore"})
    sent += s.feed(t);
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(sent, "Hello ENx and");
  EXPECT_EQ(s.text(), "Hello ENx and");
  openai::StopScanner t({"END"});
  std::string out = t.feed("abc E");
  EXPECT_EQ(out, "abc ");  // "E" held: it may begin END
  out += t.finish();
  EXPECT_EQ(out, "abc E");
  EXPECT_FALSE(t.stopped());
}

TEST(OpenAi, Base64) {
  EXPECT_EQ(openai::base64_decode("aGVsbG8gd29ybGQ="), "hello world");
  EXPECT_EQ(openai::base64_decode("aGVsbG8gd29ybGQ"), "hello world");
  EXPECT_THROW(openai::base64_decode("aGV*"), Error);
  EXPECT_THROW(openai::base64_decode("aGVsbG8=x"), Error);
}

// ------------------------------------------------------------------ the server, a toy handler

namespace {

// Answers GET /hello at once, GET /slow after `slow_ms` from another thread, GET /stream as three
// chunks; POST /echo with its body.
struct ToyServer {
  std::atomic<int> slow_ms{0};
  std::atomic<int> slow_started{0};  // /slow requests handed to a helper so far
  std::vector<std::thread> helpers;
  std::mutex mu;
  HttpServer server;
  int port;
  std::thread thread;

  explicit ToyServer(ServerOptions o)
      : server(o, [this](std::shared_ptr<Exchange> ex) { handle(std::move(ex)); }),
        port(server.bind()),
        thread([this] { server.run(); }) {}
  ~ToyServer() {
    server.stop();
    thread.join();
    for (auto& t : helpers) t.join();
  }
  void handle(std::shared_ptr<Exchange> ex) {
    const std::string path = ex->request().path;
    if (path == "/hello") return ex->respond({200, "text/plain", {}, "hello"});
    if (path == "/echo") return ex->respond({200, "text/plain", {}, ex->request().body});
    std::lock_guard<std::mutex> l(mu);
    if (path == "/slow") ++slow_started;
    if (path == "/slow")
      helpers.emplace_back([this, ex] {
        std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms.load()));
        ex->respond({200, "text/plain", {}, "slow"});
      });
    if (path == "/stream")
      helpers.emplace_back([ex] {
        ex->start_stream({200, "text/event-stream", {}, ""});
        for (const char* piece : {"one ", "two ", "three"}) ex->stream(piece);
        ex->end_stream();
      });
    if (path != "/slow" && path != "/stream") ex->respond({404, "application/json", {}, "{}"});
  }
};

// Waits (generously) until the server has handed `n` /slow requests to its helpers.
void wait_for_slow(const ToyServer& s, int n) {
  for (int i = 0; i < 6000 && s.slow_started.load() < n; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(s.slow_started.load(), n);
}

ServerOptions toy_options() {
  ServerOptions o;
  o.port = 0;
  return o;
}

}  // namespace

TEST(HttpServer, StreamsChunkedAndKeepsTheConnection) {
  ToyServer s(toy_options());
  RawConn c(s.port);
  ASSERT_TRUE(c.send_all(raw_request("GET", "/stream", "")));
  auto r = c.read_response(60);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("transfer-encoding"), "chunked");
  EXPECT_EQ(r->body, "one two three");
  ASSERT_TRUE(c.send_all(raw_request("GET", "/hello", "")));
  auto again = c.read_response(60);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->body, "hello");
}

TEST(HttpServer, AnswersContinueThenTheBody) {
  ToyServer s(toy_options());
  RawConn c(s.port);
  ASSERT_TRUE(c.send_all(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
  const std::string first = c.recv_some(60);
  EXPECT_EQ(first, "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(c.send_all("ping"));
  auto r = c.read_response(60);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "ping");
}

TEST(HttpServer, IdleConnectionsMakeRoomAndBusyOnesGet503) {
  ServerOptions o = toy_options();
  o.max_connections = 2;
  ToyServer s(o);
  s.slow_ms = 3000;
  RawConn idle(s.port);
  RawConn busy(s.port);
  ASSERT_TRUE(busy.send_all(raw_request("GET", "/slow", "")));
  wait_for_slow(s, 1);
  // a third connection: the idle one is closed to make room
  RawConn third(s.port);
  ASSERT_TRUE(third.send_all(raw_request("GET", "/hello", "")));
  auto r = third.read_response(60);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello");
  EXPECT_TRUE(idle.wait_closed(60));
  // now both slots hold requests in flight: a fourth is refused with 503
  ASSERT_TRUE(third.send_all(raw_request("GET", "/slow", "")));
  wait_for_slow(s, 2);
  RawConn fourth(s.port);
  auto refused = fourth.read_response(60);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  EXPECT_FALSE(refused->header("retry-after").empty());
  EXPECT_EQ(busy.read_response(60)->body, "slow");
}

TEST(HttpServer, BodyDeadline) {
  ServerOptions o = toy_options();
  o.body_timeout_ms = 500;
  ToyServer s(o);
  RawConn c(s.port);
  ASSERT_TRUE(c.send_all("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"));
  auto r = c.read_response(60);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 408);
  EXPECT_NE(r->body.find("body not received within 0.5 s"), std::string::npos) << r->body;
  EXPECT_TRUE(c.wait_closed(60));
}

TEST(HttpServer, IdleKeepAliveConnectionsClose) {
  ServerOptions o = toy_options();
  o.idle_timeout_ms = 300;
  ToyServer s(o);
  RawConn c(s.port);
  ASSERT_TRUE(c.send_all(raw_request("GET", "/hello", "")));
  ASSERT_TRUE(c.read_response(60));
  EXPECT_TRUE(c.wait_closed(60));
}

// stop(): new connections are refused, idle ones closed, a request in flight still answered.
TEST(HttpServer, DrainFinishesRequestsInFlight) {
  auto s = std::make_unique<ToyServer>(toy_options());
  s->slow_ms = 1500;
  const int port = s->port;
  RawConn idle(port);
  RawConn busy(port);
  ASSERT_TRUE(busy.send_all(raw_request("GET", "/slow", "")));
  wait_for_slow(*s, 1);
  s->server.stop();
  EXPECT_TRUE(idle.wait_closed(60));
  auto r = busy.read_response(60);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "slow");
  EXPECT_EQ(r->header("connection"), "close");
  s.reset();  // run() returned: the drain is over
  EXPECT_FALSE(RawConn(port).connected());
}

TEST(HttpServer, AccessLogLinePerRequest) {
  std::mutex mu;
  std::vector<std::string> lines;
  ServerOptions o = toy_options();
  o.access_log = [&](const std::string& l) {
    std::lock_guard<std::mutex> g(mu);
    lines.push_back(l);
  };
  {
    ToyServer s(o);
    RawConn c(s.port);
    ASSERT_TRUE(
        c.send_all(raw_request("GET", "/hello", "") + raw_request("GET", "/missing?a=\"b\"", "")));
    ASSERT_TRUE(c.read_response(60));
    ASSERT_TRUE(c.read_response(60));
  }
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("\"GET /hello HTTP/1.1\" 200 "), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("\"GET /missing?a=\\x22b\\x22 HTTP/1.1\" 404 "), std::string::npos)
      << lines[1];
}
