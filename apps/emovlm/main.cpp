// emovlm: one binary, one subcommand per stage. Errors print one line and exit non-zero.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <set>
#include <thread>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/core/progress.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/dist/process_group.h"

int main(int argc, char** argv) {
  {
    std::string d = "emovlm";  // what a refused second writer of an output is told
    for (int i = 1; i < argc; ++i) d += std::string(" ") + argv[i];
    emovlm::set_process_description(d.size() > 300 ? d.substr(0, 300) + " ..." : d);
  }
  CLI::App app{
      "emovlm: visual emotion analysis with EmoVLM-KD (Qwen2-VL + a distilled ViT teacher + a "
      "gate)"};
  app.set_version_flag("--version", std::string("emovlm ") + EMOVLM_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // the global flags below also after the subcommand: `emovlm demo -q`
  bool quiet = false;
  app.add_flag("-q,--quiet", quiet, "no progress bars");
  int threads = 0;
  app.add_option(
      "--threads", threads,
      "CPU threads (default: OMP_NUM_THREADS, else every core, shared among the processes that a "
      "launcher started on this machine)");
  emovlm::dist::Options dist_options;
  app.add_option("--dist-backend", dist_options.backend,
                 "under torchrun or Slurm: the collectives' backend, auto (NCCL on CUDA when built "
                 "with it, "
                 "else Gloo), gloo or nccl")
      ->capture_default_str();
  app.add_option_function<double>(
      "--dist-timeout",
      [&](double s) {
        if (!(s > 0))
          throw CLI::ValidationError("--dist-timeout", "must be a positive number of seconds");
        dist_options.timeout = std::chrono::milliseconds(static_cast<int64_t>(s * 1000));
      },
      "under torchrun or Slurm: seconds a rank waits for the others before failing (default 1800)");
  app.parse_complete_callback([&] {
    if (quiet) emovlm::Progress::set_enabled_globally(false);
    const emovlm::dist::LaunchEnv env = emovlm::dist::LaunchEnv::from_environment();
    if (threads <= 0) {
      const char* omp = std::getenv("OMP_NUM_THREADS");
      threads = omp ? std::atoi(omp) : 0;
      if (threads <= 0)
        threads = std::max(
            1, static_cast<int>(std::thread::hardware_concurrency()) / env.local_world_size);
    }
    emovlm::compat::set_num_threads(threads);
    // Launched as several processes (torchrun, srun): the commands that run data parallel join
    // the process group; the others refuse rather than run N times into one output.
    if (!env.distributed()) return;
    std::string command;
    const CLI::App* leaf = &app;
    while (!leaf->get_subcommands().empty()) {
      leaf = leaf->get_subcommands().front();
      command += (command.empty() ? "" : " ") + leaf->get_name();
    }
    static const std::set<std::string> parallel{"tune", "teacher train", "distill", "gate",
                                                "extract"};
    static const std::set<std::string> parallel_on_data{"classify", "predict"};  // with --data
    const bool on_data = parallel_on_data.count(command) && leaf->count("--data") > 0;
    if (!parallel.count(command) && !on_data)
      throw emovlm::Error(
          emovlm::cat("emovlm ", command, " runs as one process; it was started as rank ", env.rank,
                      " of ", env.world_size, " (", env.launcher,
                      "). Data parallel: tune, teacher "
                      "train, distill, gate, extract, classify --data, predict --data"));
    emovlm::dist::init(env, dist_options);
  });
  try {
    emovlm::cli::add_inspect_command(app);
    emovlm::cli::add_preprocess_command(app);
    emovlm::cli::add_vlm_commands(app);
    emovlm::cli::add_pipeline_commands(app);
    emovlm::cli::add_demo_commands(app);
    emovlm::cli::add_instruct_commands(app);
    emovlm::cli::add_serve_command(app);
    emovlm::cli::add_report_command(app);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // libtorch's errors append "Exception raised from ..." and a stack of frames: the first part
    // is the message; the rest is for libtorch's developers, not for the person at the terminal.
    std::string what = e.what();
    const size_t trace = what.find("\nException raised from ");
    if (trace != std::string::npos) what.resize(trace);
    std::fprintf(stderr, "emovlm: error: %s\n", what.c_str());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "emovlm: error: an unknown exception\n");
    return 1;
  }
  try {
    emovlm::dist::shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "emovlm: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
