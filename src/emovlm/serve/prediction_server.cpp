// A bundle's predictions over HTTP (see prediction_server.h).
#include "emovlm/serve/prediction_server.h"

#include <mutex>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/image/image.h"
#include "emovlm/pipeline/predictor.h"

#if defined(EMOVLM_HAVE_HTTP)
#include <httplib.h>
#endif

namespace emovlm {

using json = nlohmann::json;

#if defined(EMOVLM_HAVE_HTTP)

bool http_server_available() { return true; }

struct PredictionServer::State {
  Predictor& predictor;
  ServeOptions o;
  httplib::Server server;
  std::mutex model;  // one request at a time through the model
  int port = -1;
  State(Predictor& p, const ServeOptions& opt) : predictor(p), o(opt) {}
};

namespace {

void answer(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

}  // namespace

PredictionServer::PredictionServer(Predictor& predictor, const ServeOptions& o)
    : s_(std::make_unique<State>(predictor, o)) {
  State& s = *s_;
  s.server.set_payload_max_length(o.max_bytes);
  s.server.Get("/health", [&s](const httplib::Request&, httplib::Response& res) {
    answer(res, 200, {{"status", "ok"}, {"labels", s.predictor.labels()}});
  });
  s.server.Post("/predict", [&s](const httplib::Request& req, httplib::Response& res) {
    std::string name = "request";
    const std::string* bytes = &req.body;
    httplib::MultipartFormData upload;  // (get_file_value returns a copy: kept here while bytes points into it)
    if (req.is_multipart_form_data()) {
      if (!req.has_file("image")) return answer(res, 400, {{"error", "multipart upload without a file in the field 'image'"}});
      upload = req.get_file_value("image");
      if (!upload.filename.empty()) name = upload.filename;
      bytes = &upload.content;
    }
    if (bytes->empty()) return answer(res, 400, {{"error", "empty request body: send the image file's bytes"}});
    RgbImage image;
    try {
      image = decode_image_memory(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size(), name);
    } catch (const Error& e) {
      return answer(res, 400, {{"error", e.what()}});
    }
    try {
      std::lock_guard<std::mutex> lock(s.model);
      answer(res, 200, s.predictor.predict_image(image, name));
    } catch (const std::exception& e) {
      answer(res, 500, {{"error", e.what()}});
    }
  });
  s.server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty())
      res.set_content(json{{"error", res.status == 413 ? "request body over the size limit" : "no such endpoint"}}.dump(),
                      "application/json");
  });
}

PredictionServer::~PredictionServer() { stop(); }

int PredictionServer::bind() {
  State& s = *s_;
  s.port = s.o.port == 0 ? s.server.bind_to_any_port(s.o.host) : (s.server.bind_to_port(s.o.host, s.o.port) ? s.o.port : -1);
  if (s.port < 0) throw Error(cat("serve: cannot listen on ", s.o.host, ":", s.o.port, " (in use, or not an address of this machine)"));
  return s.port;
}

void PredictionServer::run() {
  if (s_->port < 0) bind();
  if (!s_->server.listen_after_bind()) throw Error(cat("serve: the server on port ", s_->port, " stopped with an error"));
}

void PredictionServer::stop() {
  if (s_ && s_->server.is_running()) s_->server.stop();
}

#else  // no cpp-httplib

bool http_server_available() { return false; }

struct PredictionServer::State {};

PredictionServer::PredictionServer(Predictor&, const ServeOptions&) {
  throw Error("serve: this build has no HTTP server (install libcpp-httplib-dev and rebuild)");
}
PredictionServer::~PredictionServer() = default;
int PredictionServer::bind() { return -1; }
void PredictionServer::run() {}
void PredictionServer::stop() {}

#endif

}  // namespace emovlm
