// The `emovlm` command line: every subcommand, the global flags on each, and what happens once
// it is parsed (progress bars, threads, joining a launcher's process group).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

// What an interrupted command says (SIGINT, SIGTERM) before it dies of the signal as it would
// have: whether running it again continues the work. Set once, before the command runs; `serve`
// installs its own graceful stop over it.
char g_interrupted_message[256];

void on_interrupt(int sig) {
  ssize_t ignored = ::write(2, g_interrupted_message, std::strlen(g_interrupted_message));
  (void)ignored;
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // (blocked until this handler returns)
}

void say_what_an_interruption_leaves(const std::string& command, const CLI::App& leaf) {
  static const std::set<std::string> resume{"tune", "teacher train", "distill", "gate"};
  static const std::set<std::string> rerun{"extract", "instruct make"};
  const bool on_data = (command == "classify" || command == "predict") && leaf.count("--data") > 0;
  std::string what = "interrupted";
  if (resume.count(command))
    what += "; the same command with --resume continues from the last checkpoint";
  else if (rerun.count(command) || on_data)
    what += "; the same command again continues where this one stopped";
  std::snprintf(g_interrupted_message, sizeof g_interrupted_message, "\nemovlm %s: %s\n",
                command.c_str(), what.c_str());
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
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
  const auto [command, leaf] = chosen_command(app);
  say_what_an_interruption_leaves(command, *leaf);
  if (!env.distributed()) return;
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

// Edit distance, for "did you mean".
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// " (did you mean X?)" for the nearest of `names`, within 2 edits or a third of the word's length.
std::string suggestion(const std::string& word, const std::vector<std::string>& names) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (const std::string& n : names) {
    const size_t d = edit_distance(word, n);
    if (d < best_distance) best = n, best_distance = d;
  }
  return best.empty() ? "" : cat(" (did you mean ", best, "?)");
}

}  // namespace

std::string parse_error_message(const CLI::App& app, const CLI::ParseError& e) {
  const auto [command, leaf] = chosen_command(app);
  const std::string where = command.empty() ? "emovlm" : "emovlm " + command;
  const std::string help = cat("; ", where, " --help lists them");
  // A word no command or flag took: a misspelled command or flag. CLI11 reports a missing
  // requirement before it ("A subcommand is required", "--bundle is required"), which would hide
  // the misspelling that caused it.
  const std::vector<std::string> unknown = app.remaining(true);
  if (!unknown.empty()) {
    const std::string& word = unknown.front();
    if (word.rfind("-", 0) == 0) {
      std::vector<std::string> flags;
      for (const CLI::Option* o : leaf->get_options())
        for (const std::string& n : o->get_lnames()) flags.push_back("--" + n);
      const std::string name = word.substr(0, word.find('='));
      return cat(where, " has no flag ", name, suggestion(name, flags), help);
    }
    const std::vector<const CLI::App*> subs = leaf->get_subcommands({});
    if (!subs.empty()) {
      std::vector<std::string> names;
      for (const CLI::App* s : subs) names.push_back(s->get_name());
      return cat("'", word, "' is not an ", where, " command", suggestion(word, names), help);
    }
  }
  return cat(e.what(), "; see ", where, " --help");
}

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
