// `emovlm serve`: a bundle's predictions over HTTP (cpp-httplib), for programs that send images
// instead of file paths.
//   GET  /health   {"status": "ok", "labels": [...]}
//   POST /predict  the image file's bytes as the body (any image Content-Type), or a
//                  multipart/form-data upload with the file in the field "image"; answers the JSON
//                  that `emovlm predict --json` gives for one image (its "image" is the upload's
//                  file name, or "request"). An image that cannot be decoded: 400 with {"error"};
//                  a body over the size limit: 413.
// One thread runs the model. With batch > 1, requests that arrive together (within batch_wait_ms
// of the first) go through one left-padded VLM forward, as `predict --batch` (a GPU's throughput;
// results equal to each alone to float rounding); with batch 1 each request is computed alone,
// bitwise independent of the others.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace emovlm {

class Predictor;

struct ServeOptions {
  std::string host = "127.0.0.1";  // 0.0.0.0 to accept other machines
  int port = 8080;                 // 0: any free port (bind() says which)
  size_t max_bytes = 32u << 20;    // the largest request body
  int batch = 1;                   // the most requests per VLM forward
  int batch_wait_ms = 5;           // how long the first request of a batch waits for others
};

class PredictionServer {
 public:
  PredictionServer(Predictor& predictor, const ServeOptions& options);
  ~PredictionServer();
  // Binds the socket; returns the port. Throws when the address cannot be bound.
  int bind();
  // Serves until stop() (from another thread or a signal handler's thread).
  void run();
  void stop();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Whether this build has an HTTP server (cpp-httplib was found).
bool http_server_available();

}  // namespace emovlm
