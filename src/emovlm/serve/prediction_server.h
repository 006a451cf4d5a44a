// `emovlm serve`: a bundle's predictions and a VLM's chat completions over HTTP, and a web page.
//   GET  /                     the page: drop, pick or paste images and see each prediction
//   GET  /health               {"status": "ok", "labels", "model", counters, limits}
//   POST /predict              the image file's bytes as the body (any or no Content-Type), or a
//                              multipart/form-data upload with the file in the field "image";
//                              answers what `emovlm predict --json` gives for one image (its
//                              "image" is the upload's file name, or "request")
//   GET  /v1/models            the VLM, OpenAI-style
//   POST /v1/chat/completions  OpenAI chat completions: text and image_url (data URL) parts,
//                              temperature, top_p, max_tokens, seed, stop, stream (server-sent
//                              events)
// Client errors are 4xx with a JSON body naming the problem ({"error": message}; OpenAI's error
// object on /v1/*); a full queue or a busy pixel budget is 503 with Retry-After.
//
// Threads: one I/O thread owns every connection (http_server.h: slow clients cost no thread); a
// few workers parse bodies and decode images; one thread runs the model, fed by a bounded queue.
// With batch > 1, predictions that arrive together (within batch_wait_ms of the first) go through
// one left-padded VLM forward (results equal to each alone to float rounding); with batch 1 each
// is computed alone, bitwise independent of the others.
//
// Memory is bounded by the options, not by clients: bodies by max_bytes (each) and the server's
// buffered-bytes limit (all), decoded images by max_pixels (a request's images, summed, by their
// declared sizes, refused before the decoder allocates) and pixel_budget (all requests at once,
// decoding or queued; a request waits up to pixel_wait_ms for room).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace emovlm {

class Predictor;
class ChatModel;

struct ServeOptions {
  std::string host = "127.0.0.1";  // 0.0.0.0 to accept other machines
  int port = 8080;                 // 0: any free port (bind() says which)
  size_t max_bytes = 32u << 20;    // the largest request body
  int batch = 1;                   // the most predictions per VLM forward
  int batch_wait_ms = 5;           // how long the first prediction of a batch waits for others
  // connections (see http_server.h)
  int max_connections = 256;
  int header_timeout_ms = 10000;  // the request header must arrive within this of its first byte
  int body_timeout_ms = 60000;    // and the body within this of the header
  int idle_timeout_ms = 30000;    // a kept-alive connection without a request is closed after this
  int drain_timeout_ms = 30000;   // stop(): how long requests in flight may take to finish
  // work
  int threads = 2;                   // workers that parse bodies and decode images
  int queue = 32;                    // requests waiting for the model at most (503 beyond)
  int64_t max_pixels = 40000000;     // one request's images, declared pixels summed (413 beyond)
  int64_t pixel_budget = 120000000;  // decoded pixels held by all requests at once
  int pixel_wait_ms = 10000;         // how long a request waits for the pixel budget (503 after)
  int max_tokens = 1024;             // /v1: the most new tokens one completion generates
  std::string api_key;               // when set: every request but the page and /health needs
                                     // "Authorization: Bearer <key>"
  std::function<void(const std::string&)> access_log;  // a line per request (none when empty)
};

class PredictionServer {
 public:
  // Predictions from a bundle (POST /predict, the page) and chat completions from a VLM (/v1);
  // either may be null, not both. The server runs both on one model thread: they may share a model.
  PredictionServer(Predictor* predictor, ChatModel* chat, const ServeOptions& options);
  // A bundle's predictions only.
  PredictionServer(Predictor& predictor, const ServeOptions& options);
  ~PredictionServer();
  // Binds the socket; returns the port. Throws Error naming the address when it cannot be bound
  // (in use by another server, or not an address of this machine).
  int bind();
  // Serves until stop() has let the requests in flight finish.
  void run();
  // Graceful stop from any thread, or from a signal handler (async-signal-safe): stop accepting,
  // close idle connections, finish requests in flight (drain_timeout_ms at most).
  void stop() noexcept;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Whether this build has an HTTP server (Linux epoll).
bool http_server_available();

}  // namespace emovlm
