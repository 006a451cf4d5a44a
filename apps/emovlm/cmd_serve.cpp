// `emovlm serve`: a bundle's predictions, a VLM's OpenAI-compatible chat completions and the web
// page over HTTP; SIGTERM or SIGINT stop it gracefully (a second one at once).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/serve/chat_model.h"
#include "emovlm/serve/prediction_server.h"

namespace emovlm::cli {

namespace {

std::atomic<PredictionServer*> g_server{nullptr};
std::atomic<int> g_signals{0};

void on_signal(int) {
  if (g_signals.fetch_add(1) > 0) _exit(130);  // a second signal: now
  if (PredictionServer* s = g_server.load()) s->stop();
}

std::string api_key(const std::string& file) {
  std::string key;
  if (!file.empty()) {
    key = read_file(file);
  } else if (const char* env = std::getenv("EMOVLM_API_KEY")) {
    key = env;
  }
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' '))
    key.pop_back();
  if (!file.empty() && key.empty()) throw Error(cat(file, ": empty API key file"));
  return key;
}

}  // namespace

void add_serve_command(CLI::App& app) {
  struct ServeArgs {
    std::string bundle, model, adapter, model_name, api_key_file, access_log = "-";
    ComputeDtype dtype = ComputeDtype::bf16;
    ComputeDevice device;  // auto
    ServeOptions o;
    double max_mb = 32, header_timeout = 10, body_timeout = 60, idle_timeout = 30,
           drain_timeout = 30;
  };
  auto a = std::make_shared<ServeArgs>();
  CLI::App* sv = app.add_subcommand("serve",
                                    "Serve predictions (a bundle), OpenAI-compatible chat "
                                    "completions (a VLM) and a web page over HTTP");
  add_bundle_flag(sv, a->bundle, false)
      ->description(
          "a folder written by `emovlm bundle`: POST /predict, the page, and /v1 with its VLM "
          "(default: none, /v1 only)");
  add_vlm_flag(sv, a->model, false)
      ->description(
          "a Qwen2-VL checkpoint folder for /v1/chat/completions (default: the bundle's VLM)");
  add_adapter_flag(sv, a->adapter);
  sv->add_option("--model-name", a->model_name,
                 "the model's id in /v1 (default: its folder's name)")
      ->group(kModelsGroup);
  add_dtype_flag(sv, a->dtype, "--vlm's compute dtype: bf16, f16 or f32");
  add_device_flag(sv, a->device);
  sv->add_option("--host", a->o.host,
                 "the address to listen on (0.0.0.0: every interface; set an API key then)")
      ->capture_default_str();
  sv->add_option("--port", a->o.port, "the port (0: any free one)")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  sv->add_option(
      "--api-key-file", a->api_key_file,
      "a file holding the API key that requests must send as 'Authorization: Bearer KEY' "
      "(default: the EMOVLM_API_KEY environment variable; none: no key)");
  sv->add_option("--max-mb", a->max_mb, "the largest request body, in MB")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sv->add_option("--max-pixels", a->o.max_pixels,
                 "the most pixels one request's images may declare, summed")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sv->add_option("--pixel-budget", a->o.pixel_budget,
                 "the most decoded pixels all requests may hold at once")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_batch_flag(sv, a->o.batch,
                 "predictions per VLM forward when they arrive together (1: each alone, "
                 "independent of the others; more: a GPU's throughput, equal to float rounding)");
  sv->add_option("--batch-wait-ms", a->o.batch_wait_ms,
                 "how long a prediction waits for others to join its batch")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sv->add_option("--workers", a->o.threads, "threads that parse requests and decode images")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group(kDeviceGroup);
  sv->add_option("--queue", a->o.queue,
                 "requests that may wait for the model (503 + Retry-After beyond)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sv->add_option("--max-connections", a->o.max_connections, "open connections at most")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sv->add_option("--header-timeout", a->header_timeout,
                 "seconds a request's header may take from its first byte (408)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sv->add_option("--body-timeout", a->body_timeout,
                 "seconds a request's body may take after its header (408)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sv->add_option("--idle-timeout", a->idle_timeout,
                 "seconds a kept-alive connection may wait for its next request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sv->add_option("--drain-timeout", a->drain_timeout,
                 "seconds requests in flight may take to finish after SIGTERM/SIGINT")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sv->add_option("--max-tokens", a->o.max_tokens,
                 "the most new tokens a chat completion may ask for")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sv->add_option("--access-log", a->access_log,
                 "where the line per request goes: - (stderr), a file, or none")
      ->capture_default_str();
  sv->callback([a] {
    if (a->bundle.empty() && a->model.empty()) throw Error("serve: give --bundle, --vlm or both");
    if (!a->adapter.empty() && a->model.empty())
      throw Error("serve: --adapter goes with --vlm (a bundle names its own)");
    ServeOptions& o = a->o;
    o.max_bytes = static_cast<size_t>(a->max_mb * (1 << 20));
    o.header_timeout_ms = static_cast<int>(a->header_timeout * 1000);
    o.body_timeout_ms = static_cast<int>(a->body_timeout * 1000);
    o.idle_timeout_ms = static_cast<int>(a->idle_timeout * 1000);
    o.drain_timeout_ms = static_cast<int>(a->drain_timeout * 1000);
    o.api_key = api_key(a->api_key_file);
    std::FILE* log = nullptr;
    if (a->access_log == "-") {
      log = stderr;
    } else if (a->access_log != "none") {
      log = std::fopen(a->access_log.c_str(), "a");
      if (!log) throw Error(cat(a->access_log, ": cannot open the access log for appending"));
    }
    if (log)
      o.access_log = [log](const std::string& line) {
        char when[32];
        const std::time_t now = std::time(nullptr);
        std::tm tm{};
        gmtime_r(&now, &tm);
        std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        std::fprintf(log, "%s %s\n", when, line.c_str());
        std::fflush(log);
      };
    std::unique_ptr<Predictor> predictor;
    std::unique_ptr<ChatModel> chat;
    if (!a->bundle.empty()) predictor = std::make_unique<Predictor>(a->bundle, a->device);
    if (!a->model.empty()) {
      chat = std::make_unique<ChatModel>(a->model, a->adapter, a->dtype, a->device, a->model_name);
    } else {
      chat = std::make_unique<ChatModel>(*predictor, a->model_name);
    }
    PredictionServer server(predictor.get(), chat.get(), o);
    const int port = server.bind();
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    g_server = &server;
    const bool loopback = o.host == "127.0.0.1" || o.host == "localhost" || o.host == "::1";
    if (!loopback && o.api_key.empty())
      std::fprintf(
          stderr,
          "serve: warning: listening on %s without an API key (--api-key-file or EMOVLM_API_KEY)\n",
          o.host.c_str());
    const std::string url = cat(
        "http://", o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host, ":", port);
    std::printf(
        "serving on %s: %s/v1/chat/completions (model %s)%s\n", url.c_str(),
        predictor
            ? cat("the page at /, POST /predict (bundle ", a->bundle, "), GET /health, ").c_str()
            : "",
        chat->id().c_str(), o.api_key.empty() ? "" : "; the endpoints need the API key");
    std::fflush(stdout);
    server.run();
    g_server = nullptr;
    if (g_signals.load() > 0) std::fprintf(stderr, "serve: stopped (SIGTERM or SIGINT)\n");
    if (log && log != stderr) std::fclose(log);
  });
}

}  // namespace emovlm::cli
