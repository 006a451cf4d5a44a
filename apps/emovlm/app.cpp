// The `emovlm` command line: every subcommand, the global flags on each, and what happens once
// it is parsed (progress bars, threads, joining a launcher's process group).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <set>
#include <thread>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/progress.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/dist/process_group.h"

namespace emovlm::cli {

namespace {

// The subcommand path that was chosen ("teacher train") and its leaf.
std::pair<std::string, const CLI::App*> chosen_command(const CLI::App& app) {
  std::string command;
  const CLI::App* leaf = &app;
  while (!leaf->get_subcommands().empty()) {
    leaf = leaf->get_subcommands().front();
    command += (command.empty() ? "" : " ") + leaf->get_name();
  }
  return {command, leaf};
}

void add_to_leaves(CLI::App* cmd, GlobalFlags& g) {
  const std::vector<CLI::App*> subs = cmd->get_subcommands({});
  if (subs.empty()) {
    add_global_flags(cmd, g);
    return;
  }
  for (CLI::App* s : subs) add_to_leaves(s, g);
}

// After parsing: the global flags take effect, and under a launcher (torchrun, srun) the commands
// that run data parallel join the process group; the others refuse rather than run N times into
// one output.
void on_parsed(const CLI::App& app, GlobalFlags& g) {
  if (g.quiet) Progress::set_enabled_globally(false);
  const dist::LaunchEnv env = dist::LaunchEnv::from_environment();
  int threads = g.threads;
  if (threads <= 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    threads = omp ? std::atoi(omp) : 0;
    if (threads <= 0)
      threads =
          std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / env.local_world_size);
  }
  compat::set_num_threads(threads);
  if (!env.distributed()) return;
  const auto [command, leaf] = chosen_command(app);
  static const std::set<std::string> parallel{"tune", "teacher train", "distill", "gate",
                                              "extract"};
  static const std::set<std::string> parallel_on_data{"classify", "predict"};  // with --data
  const bool on_data = parallel_on_data.count(command) && leaf->count("--data") > 0;
  if (!parallel.count(command) && !on_data)
    throw Error(cat("emovlm ", command, " runs as one process; it was started as rank ", env.rank,
                    " of ", env.world_size, " (", env.launcher,
                    "). Data parallel: tune, teacher train, distill, gate, extract, classify "
                    "--data, predict --data"));
  dist::Options options;
  options.backend = g.dist_backend;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(g.dist_timeout_s * 1000));
  options.overlap_gradients = g.dist_overlap;
  dist::init(env, options);
}

}  // namespace

void build_app(CLI::App& app, GlobalFlags& globals) {
  app.set_version_flag("--version", std::string("emovlm ") + EMOVLM_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // a global flag between a command and its subcommand: `teacher -q train`
  add_global_flags(&app, globals);
  add_demo_command(app);
  add_data_command(app);
  add_instruct_command(app);
  add_tune_command(app);
  add_teacher_command(app);
  add_extract_command(app);
  add_distill_command(app);
  add_gate_command(app);
  add_evaluate_command(app);
  add_ablate_command(app);
  add_report_command(app);
  add_bundle_command(app);
  add_predict_command(app);
  add_serve_command(app);
  add_chat_command(app);
  add_classify_command(app);
  add_lora_command(app);
  add_inspect_command(app);
  add_preprocess_command(app);
  add_to_leaves(&app, globals);
  app.parse_complete_callback([&app, &globals] { on_parsed(app, globals); });
}

}  // namespace emovlm::cli
