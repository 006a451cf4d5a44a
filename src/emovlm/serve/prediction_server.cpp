// A bundle's predictions and a VLM's chat completions over HTTP (see prediction_server.h).
#include "emovlm/serve/prediction_server.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/image/image.h"
#include "emovlm/image/pixel_budget.h"
#include "emovlm/image/preprocess.h"
#include "emovlm/image/resample.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/serve/assets.h"
#include "emovlm/serve/chat_model.h"
#include "emovlm/serve/http_server.h"
#include "emovlm/serve/multipart.h"
#include "emovlm/serve/openai.h"

namespace emovlm {

using json = nlohmann::json;
using http::HttpError;
using Clock = std::chrono::steady_clock;

bool http_server_available() {
  return true;
}

namespace {

constexpr int kChatImageCap = 1024;  // the long side of chat images, as `emovlm chat` caps them

// A few threads running tasks from a bounded queue.
class WorkerPool {
 public:
  WorkerPool(int threads, size_t capacity) : capacity_(capacity) {
    for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { work(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // false when the queue is full
  bool submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (tasks_.size() >= capacity_ || stopping_) return false;
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
    return true;
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }
  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// Counts a request from its acceptance to its answer (/health's in_flight).
struct InFlight {
  explicit InFlight(std::atomic<int64_t>& n) : n(n) { ++n; }
  ~InFlight() { --n; }
  std::atomic<int64_t>& n;
};

// Work for the model thread: a prediction (batched with others that arrive together) or a chat
// completion. Holds the pixels of its images until done.
struct ModelJob {
  std::shared_ptr<http::Exchange> ex;
  std::shared_ptr<InFlight> counted;
  std::vector<PixelBudget::Lease> leases;
  bool predict = false;
  RgbImage image;             // predict
  std::string name;           // predict
  std::function<void()> run;  // chat
};

// The declared pixels of one request's images: each reserved from the server's budget before its
// decoder allocates it.
struct Admission {
  int64_t declared = 0;
  std::vector<PixelBudget::Lease> leases;
};

// Compares every byte whatever differs first: the time taken says nothing about the key.
bool constant_time_equal(const std::string& a, const std::string& b) {
  unsigned diff = a.size() != b.size() ? 1u : 0u;
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i)
    diff |= static_cast<unsigned>(static_cast<unsigned char>(i < a.size() ? a[i] : 0) ^
                                  static_cast<unsigned char>(i < b.size() ? b[i] : 0));
  return diff == 0;
}

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(prefix) + buf;
}

}  // namespace

struct PredictionServer::State {
  Predictor* predictor;
  ChatModel* chat;
  ServeOptions o;
  PixelBudget pixels;
  std::unique_ptr<WorkerPool> workers;
  std::unique_ptr<http::HttpServer> http;
  const int64_t started_unix = static_cast<int64_t>(std::time(nullptr));
  std::atomic<int64_t> in_flight{0};
  // the model's queue and its thread
  std::mutex mu;
  std::condition_variable cv;
  std::deque<ModelJob> queue;
  bool stopping = false;
  int64_t predictions = 0, batches = 0, completions = 0;
  double job_seconds = 0.5;  // a running mean of one model job's time: Retry-After's estimate
  std::thread model_thread;

  State(Predictor* p, ChatModel* c, const ServeOptions& opt)
      : predictor(p), chat(c), o(opt), pixels(opt.pixel_budget) {}

  // ---- answers

  json error_json(bool v1, int status, const std::string& message, const std::string& param = "",
                  const std::string& code = "") const {
    if (v1) return openai::error_body(status, message, param, code);
    return {{"error", http::valid_utf8(message)}};
  }

  static http::Response json_response(int status, const json& body) {
    http::Response r;
    r.status = status;
    r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
    return r;
  }

  void answer_error(http::Exchange& ex, int status, const std::string& message,
                    const std::string& param = "", const std::string& code = "") {
    const bool v1 = ex.request().path.rfind("/v1/", 0) == 0;
    http::Response r = json_response(status, error_json(v1, status, message, param, code));
    if (status == 503) r.headers.emplace_back("Retry-After", std::to_string(retry_after_s()));
    if (status == 401) r.headers.emplace_back("WWW-Authenticate", "Bearer");
    ex.respond(std::move(r));
  }

  int retry_after_s() {
    std::lock_guard<std::mutex> l(mu);
    const double wait = job_seconds * static_cast<double>(queue.size() + 1) / std::max(1, o.batch);
    return std::max(1, static_cast<int>(std::ceil(wait)));
  }

  // Runs `f`, answering what it throws: a client error as itself, an image that cannot be read
  // as 400, anything else as 500 (logged, not shown).
  template <typename F>
  void answering_errors(http::Exchange& ex, F&& f) {
    try {
      f();
    } catch (const HttpError& e) {
      answer_error(ex, e.status, e.what(), e.param, e.code);
    } catch (const Error& e) {
      answer_error(ex, 400, e.what());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "serve: internal error on %s %s: %s\n", ex.request().method.c_str(),
                   http::printable(ex.request().target, 100).c_str(), e.what());
      answer_error(ex, 500, "internal error");
    }
  }

  // ---- images

  RgbImage decode_admitted(std::string_view bytes, const std::string& name, Admission& a) {
    DecodeOptions d;
    d.max_pixels = 0;  // the server's own limits, in admit
    d.admit = [&](int64_t w, int64_t h) {
      const int64_t px = w * h;
      if (a.declared + px > o.max_pixels)
        throw HttpError(
            413,
            cat(name, ": image of ", w, "x", h, " = ", px, " pixels",
                a.declared ? cat(" (", a.declared + px, " with the request's other images)") : "",
                " is over this server's limit of ", o.max_pixels, " pixels per request"));
      if (px > pixels.capacity())
        throw HttpError(413,
                        cat(name, ": image of ", w, "x", h, " = ", px,
                            " pixels is over this server's pixel budget of ", pixels.capacity()));
      auto lease = pixels.acquire(px, std::chrono::milliseconds(o.pixel_wait_ms));
      if (!lease)
        throw HttpError(503, "the server is decoding too many images at once; retry shortly");
      a.declared += px;
      a.leases.push_back(std::move(*lease));
    };
    RgbImage img =
        decode_image_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name, d);
    return img;
  }

  // Capped at `cap` and checked against what the VLM's processor accepts; the request's lease
  // shrinks to the pixels it keeps.
  RgbImage prepare(RgbImage img, const std::string& name, int cap, const Qwen2VLImageConfig& cfg) {
    const int w0 = img.width, h0 = img.height;
    img = cap_long_side(img, cap);
    try {
      smart_resize(img.height, img.width, cfg.factor(), cfg.min_pixels, cfg.max_pixels);
    } catch (const Error& e) {
      std::string why = e.what();
      if (why.rfind("smart_resize: ", 0) == 0) why = why.substr(14);
      throw HttpError(400, cat(name, ": the VLM cannot take a ", w0, "x", h0, " image: ", why));
    }
    return img;
  }

  static void keep_only(Admission& a, int64_t kept) {
    for (PixelBudget::Lease& l : a.leases) {
      const int64_t keep = std::min(kept, l.pixels());
      l.shrink(keep);
      kept -= keep;
    }
  }

  // ---- the model's queue

  bool enqueue(ModelJob job) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (stopping || static_cast<int>(queue.size()) >= o.queue) return false;
      queue.push_back(std::move(job));
    }
    cv.notify_all();
    return true;
  }

  void work() {
    const size_t most = static_cast<size_t>(std::max(1, o.batch));
    for (;;) {
      std::vector<ModelJob> jobs;
      {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;  // stopping, nothing left
        if (queue.front().predict && most > 1) {
          // let the predictions that arrive together join the first
          auto predictions_queued = [&] {
            return static_cast<size_t>(std::count_if(queue.begin(), queue.end(),
                                                     [](const ModelJob& j) { return j.predict; }));
          };
          cv.wait_for(l, std::chrono::milliseconds(o.batch_wait_ms),
                      [&] { return stopping || predictions_queued() >= most; });
          for (auto it = queue.begin(); it != queue.end() && jobs.size() < most;) {
            if (it->predict) {
              jobs.push_back(std::move(*it));
              it = queue.erase(it);
            } else {
              ++it;
            }
          }
        } else {
          jobs.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      // a client that left while its request waited costs no model time
      jobs.erase(std::remove_if(jobs.begin(), jobs.end(),
                                [](const ModelJob& j) { return j.ex->client_gone(); }),
                 jobs.end());
      if (jobs.empty()) continue;
      const auto t0 = Clock::now();
      if (jobs[0].predict) {
        run_predictions(jobs);
      } else {
        jobs[0].run();
      }
      const double s = std::chrono::duration<double>(Clock::now() - t0).count() /
                       static_cast<double>(jobs.size());
      std::lock_guard<std::mutex> l(mu);
      job_seconds = 0.8 * job_seconds + 0.2 * s;
    }
  }

  void run_predictions(std::vector<ModelJob>& jobs) {
    std::vector<RgbImage> images;
    std::vector<std::string> names;
    for (ModelJob& j : jobs) {
      images.push_back(std::move(j.image));
      names.push_back(j.name);
    }
    {
      std::lock_guard<std::mutex> l(mu);
      predictions += static_cast<int64_t>(jobs.size());
      ++batches;
    }
    try {
      std::vector<json> out = predictor->predict_images(std::move(images), names, o.batch == 1);
      for (size_t i = 0; i < jobs.size(); ++i) jobs[i].ex->respond(json_response(200, out[i]));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "serve: prediction failed: %s\n", e.what());
      for (ModelJob& j : jobs) answer_error(*j.ex, 500, "internal error: the prediction failed");
    }
  }

  // ---- routes

  bool authorized(http::Exchange& ex) {
    if (o.api_key.empty()) return true;
    const std::string* h = ex.request().header("authorization");
    if (h && h->size() > 7 && h->compare(0, 7, "Bearer ") == 0 &&
        constant_time_equal(h->substr(7), o.api_key))
      return true;
    answer_error(ex, 401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                 "", "invalid_api_key");
    return false;
  }

  void submit(const std::shared_ptr<http::Exchange>& ex,
              void (State::*task)(const std::shared_ptr<http::Exchange>&,
                                  const std::shared_ptr<InFlight>&)) {
    auto counted = std::make_shared<InFlight>(in_flight);
    if (!workers->submit([this, ex, counted, task] { (this->*task)(ex, counted); }))
      answer_error(*ex, 503, "the server is busy; retry shortly");
  }

  void handle(const std::shared_ptr<http::Exchange>& ex) {
    const http::Request& q = ex->request();
    const std::string& path = q.path;
    const bool get = q.method == "GET" || q.method == "HEAD";
    if (path == "/predict" || path == "/v1/chat/completions") {
      if (q.method != "POST") {
        http::Response r = json_response(
            405, error_json(path[1] == 'v', 405, cat(path, " takes POST, not ", q.method)));
        r.headers.emplace_back("Allow", "POST");
        return ex->respond(std::move(r));
      }
      const bool predict = path == "/predict";
      if (predict && !predictor)
        return answer_error(*ex, 404,
                            "this server has no bundle: POST /predict needs `serve --bundle`");
      if (!predict && !chat)
        return answer_error(*ex, 404, "this server has no VLM for chat completions", "",
                            "model_not_found");
      if (!authorized(*ex)) return;
      return submit(ex, predict ? &State::predict_task : &State::chat_task);
    }
    const Asset* asset = find_asset(path);
    const bool known_get =
        asset || path == "/health" || path == "/v1/models" || path.rfind("/v1/models/", 0) == 0;
    if (known_get && !get) {
      http::Response r = json_response(405, error_json(path.rfind("/v1/", 0) == 0, 405,
                                                       cat(path, " takes GET, not ", q.method)));
      r.headers.emplace_back("Allow", "GET, HEAD");
      return ex->respond(std::move(r));
    }
    if (asset) {
      http::Response r;
      r.content_type = asset->content_type;
      r.body.assign(reinterpret_cast<const char*>(asset->data), asset->size);
      r.headers = {{"Cache-Control", "no-cache"}, {"X-Content-Type-Options", "nosniff"}};
      if (r.content_type.rfind("text/html", 0) == 0)
        r.headers.emplace_back(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'");
      return ex->respond(std::move(r));
    }
    if (path == "/health") return ex->respond(json_response(200, health()));
    if (path == "/v1/models" || path.rfind("/v1/models/", 0) == 0) {
      if (!authorized(*ex)) return;
      const json m = {{"id", chat ? chat->id() : ""},
                      {"object", "model"},
                      {"created", started_unix},
                      {"owned_by", "emovlm"}};
      if (path == "/v1/models")
        return ex->respond(json_response(
            200, {{"object", "list"}, {"data", chat ? json::array({m}) : json::array()}}));
      const std::string id = path.substr(11);
      if (!chat || id != chat->id())
        return answer_error(*ex, 404,
                            cat("the model '", http::printable(id, 100), "' does not exist"),
                            "model", "model_not_found");
      return ex->respond(json_response(200, m));
    }
    answer_error(
        *ex, 404,
        cat("no such endpoint: ", http::printable(q.method, 16), " ", http::printable(path, 100)));
  }

  json health() {
    std::lock_guard<std::mutex> l(mu);
    return {{"status", "ok"},
            {"labels", predictor ? json(predictor->labels()) : json(nullptr)},
            {"model", chat ? json(chat->id()) : json(nullptr)},
            {"auth", !o.api_key.empty()},
            {"batch", o.batch},
            {"requests", predictions},
            {"batches", batches},
            {"completions", completions},
            {"in_flight", in_flight.load()},
            {"queued", queue.size()},
            {"max_bytes", o.max_bytes},
            {"max_pixels", o.max_pixels},
            {"pixel_budget", pixels.capacity()},
            {"pixels_in_use", pixels.in_use()}};
  }

  // ---- POST /predict (on a worker)

  void predict_task(const std::shared_ptr<http::Exchange>& ex,
                    const std::shared_ptr<InFlight>& counted) {
    answering_errors(*ex, [&] {
      const http::Request& q = ex->request();
      std::string name = "request";
      std::string_view bytes = q.body;
      const std::string* type = q.header("content-type");
      if (type && http::is_multipart(*type)) {
        const std::vector<http::MultipartPart> parts = http::parse_multipart(q.body, *type);
        auto it = std::find_if(parts.begin(), parts.end(),
                               [](const http::MultipartPart& p) { return p.name == "image"; });
        if (it == parts.end())
          throw HttpError(400, "multipart upload without a file in the field 'image'");
        if (!it->filename.empty()) name = http::valid_utf8(it->filename);
        bytes = it->content;
      }
      if (bytes.empty())
        throw HttpError(400, name == "request" ? "empty request body: send the image file's bytes"
                                               : name + ": empty file");
      Admission a;
      RgbImage img = prepare(decode_admitted(bytes, name, a), name, predictor->image_cap(),
                             predictor->processor().image_config());
      keep_only(a, static_cast<int64_t>(img.width) * img.height);
      ModelJob job;
      job.ex = ex;
      job.counted = counted;
      job.leases = std::move(a.leases);
      job.predict = true;
      job.image = std::move(img);
      job.name = name;
      if (!enqueue(std::move(job)))
        throw HttpError(503,
                        cat("the model's queue is full (", o.queue, " requests); retry shortly"));
    });
  }

  // ---- POST /v1/chat/completions (on a worker, then the model thread)

  void chat_task(const std::shared_ptr<http::Exchange>& ex,
                 const std::shared_ptr<InFlight>& counted) {
    answering_errors(*ex, [&] {
      auto r =
          std::make_shared<openai::ChatRequest>(openai::parse_chat_request(ex->request().body));
      if (!r->model.empty() && r->model != chat->id())
        throw HttpError(
            404,
            cat("the model '", r->model, "' does not exist (this server has '", chat->id(), "')"),
            "model", "model_not_found");
      Admission a;
      auto images = std::make_shared<std::vector<RgbImage>>();
      int64_t kept = 0;
      for (openai::ChatImage& ci : r->images) {
        RgbImage img = prepare(decode_admitted(ci.bytes, ci.where, a), ci.where, kChatImageCap,
                               chat->image_config());
        kept += static_cast<int64_t>(img.width) * img.height;
        images->push_back(std::move(img));
        ci.bytes.clear();
        ci.bytes.shrink_to_fit();
      }
      keep_only(a, kept);
      ModelJob job;
      job.ex = ex;
      job.counted = counted;
      job.leases = std::move(a.leases);
      job.run = [this, ex, r, images] { run_chat(*ex, *r, std::move(*images)); };
      if (!enqueue(std::move(job)))
        throw HttpError(503,
                        cat("the model's queue is full (", o.queue, " requests); retry shortly"));
    });
  }

  void run_chat(http::Exchange& ex, const openai::ChatRequest& r, std::vector<RgbImage> images) {
    {
      std::lock_guard<std::mutex> l(mu);
      ++completions;
    }
    const std::string id = random_id("chatcmpl-");
    const int64_t created = static_cast<int64_t>(std::time(nullptr));
    const std::string& model = chat->id();
    ChatSettings st;
    st.temperature = r.temperature;
    st.top_p = r.top_p;
    st.max_tokens = r.max_tokens;
    st.seed = r.seed;
    st.stop = r.stop;
    bool started = false;
    auto start = [&] {
      if (started) return;
      started = true;
      http::Response head;
      head.content_type = "text/event-stream";
      head.headers = {{"Cache-Control", "no-cache"}};
      ex.start_stream(std::move(head));
      ex.stream(
          openai::sse(openai::chunk(id, created, model, {{"role", "assistant"}, {"content", ""}})));
    };
    try {
      if (r.stream) {
        ChatAnswer a = chat->complete(
            r.messages, std::move(images), st, o.max_tokens, [&](const std::string& piece) {
              start();
              return ex.stream(
                  openai::sse(openai::chunk(id, created, model, {{"content", piece}})));
            });
        start();
        ex.stream(openai::sse(openai::chunk(id, created, model, json::object(), a.finish_reason)));
        if (r.include_usage)
          ex.stream(openai::sse(
              openai::usage_chunk(id, created, model, {a.prompt_tokens, a.completion_tokens})));
        ex.stream("data: [DONE]\n\n");
        ex.end_stream();
      } else {
        ChatAnswer a = chat->complete(r.messages, std::move(images), st, o.max_tokens,
                                      [&](const std::string&) { return !ex.client_gone(); });
        ex.respond(
            json_response(200, openai::completion(id, created, model, a.text, a.finish_reason,
                                                  {a.prompt_tokens, a.completion_tokens})));
      }
    } catch (const std::exception& e) {
      const HttpError* he = dynamic_cast<const HttpError*>(&e);
      if (!he) std::fprintf(stderr, "serve: chat completion failed: %s\n", e.what());
      const int status = he ? he->status : 500;
      const std::string message = he ? e.what() : "internal error: the completion failed";
      if (!started) {
        answer_error(ex, status, message, he ? he->param : "", he ? he->code : "");
      } else {  // the stream has begun: the error as its last event
        ex.stream(openai::sse(openai::error_body(status, message)));
        ex.end_stream();
      }
    }
  }
};

PredictionServer::PredictionServer(Predictor* predictor, ChatModel* chat, const ServeOptions& o)
    : s_(std::make_unique<State>(predictor, chat, o)) {
  if (!predictor && !chat) throw Error("serve: nothing to serve (give a bundle, a VLM or both)");
  if (o.batch < 1) throw Error(cat("serve: --batch must be 1 or more, not ", o.batch));
  if (o.batch_wait_ms < 0)
    throw Error(cat("serve: --batch-wait-ms must be 0 or more, not ", o.batch_wait_ms));
  if (o.threads < 1 || o.queue < 1 || o.max_connections < 1)
    throw Error("serve: --threads, --queue and --max-connections must be 1 or more");
  if (o.max_pixels < 1)
    throw Error(cat("serve: --max-pixels must be positive, not ", o.max_pixels));
  if (o.max_tokens < 1)
    throw Error(cat("serve: --max-tokens must be positive, not ", o.max_tokens));
  State& s = *s_;
  http::ServerOptions h;
  h.host = o.host;
  h.port = o.port;
  h.max_connections = o.max_connections;
  h.limits.max_body = o.max_bytes;
  h.max_buffered_bytes = std::max<size_t>(o.max_bytes, size_t{512} << 20);
  h.header_timeout_ms = o.header_timeout_ms;
  h.body_timeout_ms = o.body_timeout_ms;
  h.idle_timeout_ms = o.idle_timeout_ms;
  h.drain_timeout_ms = o.drain_timeout_ms;
  h.access_log = o.access_log;
  h.error_body = [&s](const std::string& path, int status, const std::string& message) {
    return s.error_json(path.rfind("/v1/", 0) == 0, status, message)
        .dump(-1, ' ', false, json::error_handler_t::replace);
  };
  s.workers = std::make_unique<WorkerPool>(o.threads, static_cast<size_t>(o.queue) * 2);
  s.http = std::make_unique<http::HttpServer>(
      h, [&s](std::shared_ptr<http::Exchange> ex) { s.handle(ex); });
  s.model_thread = std::thread([&s] { s.work(); });
}

PredictionServer::PredictionServer(Predictor& predictor, const ServeOptions& o)
    : PredictionServer(&predictor, nullptr, o) {}

PredictionServer::~PredictionServer() {
  s_->workers.reset();  // finishes the tasks taken
  {
    std::lock_guard<std::mutex> l(s_->mu);
    s_->stopping = true;
  }
  s_->cv.notify_all();
  if (s_->model_thread.joinable()) s_->model_thread.join();
}

int PredictionServer::bind() {
  return s_->http->bind();
}
void PredictionServer::run() {
  s_->http->run();
}
void PredictionServer::stop() noexcept {
  s_->http->stop();
}

}  // namespace emovlm
