// emovlm: one binary, one subcommand per stage. Errors print one line and exit non-zero.
#include <cstdio>
#include <exception>

#include "commands.h"
#include "emovlm/core/output_lock.h"
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
  emovlm::cli::GlobalFlags globals;
  try {
    emovlm::cli::build_app(app, globals);
    app.parse(argc, argv);
    emovlm::dist::shutdown();
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "emovlm: error: %s\n", emovlm::cli::parse_error_message(app, e).c_str());
    return e.get_exit_code();
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
  return 0;
}
