// A bundle's predictions over HTTP (see prediction_server.h).
#include "emovlm/serve/prediction_server.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

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
  struct Pending {
    RgbImage image;
    std::string name;
    std::promise<json> result;
  };
  Predictor& predictor;
  ServeOptions o;
  httplib::Server server;
  int port = -1;
  // the requests waiting for the model, and the one thread that runs it
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Pending> queue;
  bool stopping = false;
  int64_t requests = 0, batches = 0;
  std::thread worker;

  State(Predictor& p, const ServeOptions& opt) : predictor(p), o(opt) {}

  json predict(RgbImage image, const std::string& name) {
    std::future<json> f;
    {
      std::lock_guard<std::mutex> l(mu);
      if (stopping) throw Error("serve: the server is stopping");
      queue.push_back({std::move(image), name, {}});
      f = queue.back().result.get_future();
    }
    cv.notify_all();
    return f.get();
  }

  void work() {
    const size_t most = static_cast<size_t>(std::max(1, o.batch));
    for (;;) {
      std::vector<Pending> batch;
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, nothing left
        if (most > 1)  // let the requests that arrive together join the first
          cv.wait_for(l, std::chrono::milliseconds(o.batch_wait_ms), [&] { return stopping || queue.size() >= most; });
        while (!queue.empty() && batch.size() < most) {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
        requests += static_cast<int64_t>(batch.size());
        ++batches;
      }
      std::vector<RgbImage> images;
      std::vector<std::string> names;
      for (Pending& p : batch) {
        images.push_back(std::move(p.image));
        names.push_back(p.name);
      }
      try {
        std::vector<json> out = predictor.predict_images(std::move(images), names, most == 1);
        for (size_t i = 0; i < batch.size(); ++i) batch[i].result.set_value(std::move(out[i]));
      } catch (...) {
        for (Pending& p : batch) p.result.set_exception(std::current_exception());
      }
    }
  }
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
  if (o.batch < 1) throw Error(cat("serve: --batch must be 1 or more, not ", o.batch));
  if (o.batch_wait_ms < 0) throw Error(cat("serve: --batch-wait-ms must be 0 or more, not ", o.batch_wait_ms));
  s.server.Get("/health", [&s](const httplib::Request&, httplib::Response& res) {
    std::lock_guard<std::mutex> l(s.mu);
    answer(res, 200, {{"status", "ok"}, {"labels", s.predictor.labels()}, {"batch", s.o.batch},
                      {"requests", s.requests}, {"batches", s.batches}});
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
      answer(res, 200, s.predict(std::move(image), name));
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

PredictionServer::~PredictionServer() {
  stop();
  {
    std::lock_guard<std::mutex> l(s_->mu);
    s_->stopping = true;
  }
  s_->cv.notify_all();
  if (s_->worker.joinable()) s_->worker.join();
}

int PredictionServer::bind() {
  State& s = *s_;
  s.port = s.o.port == 0 ? s.server.bind_to_any_port(s.o.host) : (s.server.bind_to_port(s.o.host, s.o.port) ? s.o.port : -1);
  if (s.port < 0) throw Error(cat("serve: cannot listen on ", s.o.host, ":", s.o.port, " (in use, or not an address of this machine)"));
  return s.port;
}

void PredictionServer::run() {
  if (s_->port < 0) bind();
  if (!s_->worker.joinable()) s_->worker = std::thread([this] { s_->work(); });
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
