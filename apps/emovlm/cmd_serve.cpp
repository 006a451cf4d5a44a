// `emovlm serve`: a bundle's predictions over HTTP (POST /predict with an image; GET /health).
#include <cstdio>
#include <memory>

#include "commands.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/serve/prediction_server.h"

namespace emovlm::cli {

void add_serve_command(CLI::App& app) {
  struct ServeArgs {
    std::string bundle, device = "auto";
    ServeOptions o;
    double max_mb = 32;
  };
  auto a = std::make_shared<ServeArgs>();
  CLI::App* sv = app.add_subcommand("serve", "Serve a bundle's predictions over HTTP (POST /predict with an image)");
  sv->add_option("--bundle", a->bundle, "a directory written by `emovlm bundle`")->required();
  sv->add_option("--host", a->o.host, "the address to listen on (0.0.0.0: every interface)")->capture_default_str();
  sv->add_option("--port", a->o.port, "the port (0: any free one)")->capture_default_str()->check(CLI::Range(0, 65535));
  sv->add_option("--device", a->device, "cpu, cuda or auto")->capture_default_str();
  sv->add_option("--max-mb", a->max_mb, "the largest image accepted, in MB")->capture_default_str()->check(CLI::PositiveNumber);
  sv->add_option("--batch", a->o.batch,
                 "requests per VLM forward when they arrive together (1: each alone, independent of the others; "
                 "more: a GPU's throughput, equal to float rounding)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sv->add_option("--batch-wait-ms", a->o.batch_wait_ms, "how long a request waits for others to join its batch")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sv->callback([a] {
    a->o.max_bytes = static_cast<size_t>(a->max_mb * (1 << 20));
    Predictor predictor(a->bundle, a->device);
    PredictionServer server(predictor, a->o);
    const int port = server.bind();
    std::printf("serving %s on http://%s:%d: POST /predict with an image file as the body (or a multipart field "
                "'image'), GET /health\n",
                a->bundle.c_str(), a->o.host.c_str(), port);
    std::fflush(stdout);
    server.run();
  });
}

}  // namespace emovlm::cli
