// `emovlm demo`: every stage of EmoVLM-KD on built-in data with tiny models, and a report.
#include <memory>

#include "commands.h"
#include "emovlm/pipeline/demo.h"

namespace emovlm::cli {

void add_demo_command(CLI::App& app) {
  auto d = std::make_shared<DemoOptions>();
  CLI::App* cmd =
      app.add_subcommand("demo", "Run every stage of EmoVLM-KD on built-in data with tiny models");
  add_out_flag(cmd, d->out, "the demo's folder (data, models, caches, REPORT.md)", false)
      ->capture_default_str();
  cmd->add_flag("--quick", d->quick, "fewer images and epochs (about a third of the time)");
  add_seed_flag(cmd, d->seed, "the images, the models' initialisation and the batches");
  cmd->callback([d] { run_demo(*d); });
}

}  // namespace emovlm::cli
