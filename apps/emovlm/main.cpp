// emovlm: one binary, one subcommand per stage. Errors print one line and exit non-zero.
#include <exception>
#include <iostream>

#include "commands.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/core/progress.h"
#include "emovlm/core/torch_compat.h"

int main(int argc, char** argv) {
  {
    std::string d = "emovlm";  // what a refused second writer of an output is told
    for (int i = 1; i < argc; ++i) d += std::string(" ") + argv[i];
    emovlm::set_process_description(d.size() > 300 ? d.substr(0, 300) + " ..." : d);
  }
  CLI::App app{"emovlm: visual emotion analysis with EmoVLM-KD (Qwen2-VL + a distilled ViT teacher + a gate)"};
  app.set_version_flag("--version", std::string("emovlm ") + EMOVLM_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // the global flags below also after the subcommand: `emovlm demo -q`
  bool quiet = false;
  app.add_flag("-q,--quiet", quiet, "no progress bars");
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads (default: every core)");
  app.parse_complete_callback([&] {
    if (quiet) emovlm::Progress::set_enabled_globally(false);
    emovlm::compat::set_num_threads(threads);
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
    std::cerr << "emovlm: error: " << what << std::endl;
    return 1;
  } catch (...) {
    std::cerr << "emovlm: error: an unknown exception" << std::endl;
    return 1;
  }
  return 0;
}
