// The command line as a whole: every flag of every subcommand described (with its default), the
// shared flags defined once in their groups, the global flags in every subcommand's --help, the
// renamed flags' older spellings still accepted, bad values refused while parsing.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "commands.h"
#include "emovlm/core/device.h"

namespace {

using emovlm::cli::GlobalFlags;

struct Cli {
  CLI::App app{"emovlm"};
  GlobalFlags globals;
  Cli() { emovlm::cli::build_app(app, globals); }
};

// Every leaf subcommand by its path ("teacher train").
void collect_leaves(CLI::App* cmd, const std::string& path,
                    std::vector<std::pair<std::string, CLI::App*>>& out) {
  const std::vector<CLI::App*> subs = cmd->get_subcommands({});
  if (subs.empty()) {
    out.emplace_back(path, cmd);
    return;
  }
  for (CLI::App* s : subs)
    collect_leaves(s, path.empty() ? s->get_name() : path + " " + s->get_name(), out);
}

std::vector<std::pair<std::string, CLI::App*>> leaves(CLI::App& app) {
  std::vector<std::pair<std::string, CLI::App*>> out;
  collect_leaves(&app, "", out);
  return out;
}

std::vector<const CLI::Option*> options_of(const CLI::App* cmd) {
  std::vector<const CLI::Option*> out;
  for (const CLI::Option* o : cmd->get_options())
    if (o->get_name() != "-h,--help" && o->get_name() != "--help") out.push_back(o);
  return out;
}

// Runs parse on argv-style words and returns the parse error's message ("" when it parsed).
std::string parse_error(const std::vector<std::string>& words) {
  Cli cli;
  std::vector<std::string> args(words.rbegin(), words.rend());  // CLI11 takes them reversed
  try {
    cli.app.parse(args);
  } catch (const CLI::ParseError& e) {
    return std::string(e.get_name()) + ": " + e.what();
  }
  return "";
}

TEST(Cli, EverySubcommandIsThere) {
  Cli cli;
  std::set<std::string> names;
  for (const auto& [path, cmd] : leaves(cli.app)) names.insert(path);
  for (const char* expected :
       {"demo",    "data convert",  "data check",   "instruct make", "instruct import",
        "tune",    "teacher train", "teacher eval", "extract",       "distill",
        "gate",    "evaluate",      "ablate",       "report-html",   "bundle",
        "predict", "serve",         "chat",         "classify",      "lora merge",
        "inspect", "preprocess"})
    EXPECT_TRUE(names.count(expected)) << expected;
}

TEST(Cli, EveryFlagIsDescribedWithItsDefault) {
  Cli cli;
  for (const auto& [path, cmd] : leaves(cli.app)) {
    EXPECT_FALSE(cmd->get_description().empty()) << path;
    for (const CLI::Option* o : options_of(cmd)) {
      const std::string where = path + " " + o->get_name();
      EXPECT_FALSE(o->get_description().empty()) << where << ": no description";
      // an optional value says what it is when not given: a shown default, or in words
      if (!o->get_required() && o->get_expected_max() > 0 && !o->get_positional())
        EXPECT_TRUE(!o->get_default_str().empty() ||
                    o->get_description().find("default") != std::string::npos ||
                    o->get_description().find("(0: ") != std::string::npos)
            << where << ": neither a default shown nor said";
    }
  }
}

TEST(Cli, SharedFlagsComeFromTheirGroups) {
  const std::map<std::string, std::string> group{
      {"--vlm", emovlm::cli::kModelsGroup},          {"--adapter", emovlm::cli::kModelsGroup},
      {"--teacher", emovlm::cli::kModelsGroup},      {"--distill", emovlm::cli::kModelsGroup},
      {"--bundle", emovlm::cli::kModelsGroup},       {"--data", emovlm::cli::kDataGroup},
      {"--split", emovlm::cli::kDataGroup},          {"--labels", emovlm::cli::kDataGroup},
      {"--val-fraction", emovlm::cli::kDataGroup},   {"--split-seed", emovlm::cli::kDataGroup},
      {"--out", emovlm::cli::kOutputGroup},          {"--json", emovlm::cli::kOutputGroup},
      {"--device", emovlm::cli::kDeviceGroup},       {"--dtype", emovlm::cli::kDeviceGroup},
      {"--batch", emovlm::cli::kDeviceGroup},        {"--workers", emovlm::cli::kDeviceGroup},
      {"--autocast", emovlm::cli::kDeviceGroup},     {"--epochs", emovlm::cli::kTrainingGroup},
      {"--batch-size", emovlm::cli::kTrainingGroup}, {"--resume", emovlm::cli::kTrainingGroup},
      {"--overwrite", emovlm::cli::kTrainingGroup},  {"--save-every", emovlm::cli::kTrainingGroup},
      {"--lr", emovlm::cli::kOptimizerGroup},        {"--optimizer", emovlm::cli::kOptimizerGroup},
      {"--threads", emovlm::cli::kGlobalGroup},      {"--quiet", emovlm::cli::kGlobalGroup}};
  Cli cli;
  std::map<std::string, std::set<std::string>> descriptions;
  int checked = 0;
  for (const auto& [path, cmd] : leaves(cli.app))
    for (const CLI::Option* o : options_of(cmd))
      if (!o->get_lnames().empty()) {
        const std::string name = "--" + o->get_lnames().front();  // aliases follow it
        const auto g = group.find(name);
        if (g == group.end()) continue;
        EXPECT_EQ(o->get_group(), g->second) << path << " " << name;
        ++checked;
        descriptions[name].insert(o->get_description());
      }
  EXPECT_GT(checked, 100);
  // flags whose meaning is the same everywhere have one description
  for (const char* same :
       {"--device", "--threads", "--resume", "--overwrite", "--save-every", "--lr", "--optimizer"})
    EXPECT_EQ(descriptions[same].size(), 1u) << same;
}

TEST(Cli, EveryHelpListsItsFlagsAndTheGlobalOnes) {
  Cli cli;
  for (const auto& [path, cmd] : leaves(cli.app)) {
    const std::string help = cmd->help();
    EXPECT_NE(help.find(emovlm::cli::kGlobalGroup), std::string::npos) << path;
    for (const char* global :
         {"--quiet", "--threads", "--dist-backend", "--dist-timeout", "--dist-overlap"})
      EXPECT_NE(help.find(global), std::string::npos) << path << " lacks " << global;
    for (const CLI::Option* o : options_of(cmd))
      if (!o->get_positional())
        EXPECT_NE(help.find(o->get_lnames().empty() ? "-" + o->get_snames().front()
                                                    : "--" + o->get_lnames().front()),
                  std::string::npos)
            << path << " " << o->get_name();
  }
}

TEST(Cli, TheVlmFolderIsVlmEverywhereAndModelStillWorks) {
  Cli cli;
  int with_vlm = 0;
  for (const auto& [path, cmd] : leaves(cli.app)) {
    for (const CLI::Option* o : options_of(cmd)) {
      if (!o->check_name("--model")) continue;
      if (path == "instruct make") {  // there, the endpoint's model by name
        EXPECT_FALSE(o->check_name("--vlm"));
        continue;
      }
      EXPECT_TRUE(o->check_name("--vlm")) << path << ": --model is not --vlm's alias";
      EXPECT_EQ(o->get_lnames().front(), "vlm") << path;
      ++with_vlm;
    }
  }
  EXPECT_EQ(with_vlm, 7);  // chat, classify, serve, extract, tune, bundle, lora merge
}

TEST(Cli, RenamedFlagsKeepTheirOlderSpellings) {
  Cli cli;
  auto option = [&](const std::vector<std::string>& path, const std::string& name) {
    CLI::App* cmd = &cli.app;
    for (const auto& p : path) cmd = cmd->get_subcommand(p);
    return cmd->get_option(name);
  };
  EXPECT_TRUE(option({"gate"}, "--kind")->check_name("--gate"));
  EXPECT_TRUE(option({"ablate"}, "--gate-kind")->check_name("--gate"));
  EXPECT_TRUE(option({"teacher", "eval"}, "--batch")->check_name("--batch-size"));
  for (const char* cmd : {"chat", "classify", "serve"})
    EXPECT_TRUE(option({cmd}, "--vlm")->check_name("--model")) << cmd;
}

TEST(Cli, BadValuesAreRefusedWhileParsingNamingTheFlag) {
  const std::string device =
      parse_error({"classify", "--vlm", "v", "--device", "gpu", "image.png"});
  EXPECT_NE(device.find("--device"), std::string::npos) << device;
  EXPECT_NE(device.find("cpu, cuda, cuda:N or auto"), std::string::npos) << device;
  EXPECT_NE(parse_error({"classify", "--vlm", "v", "--dtype", "f8", "image.png"}).find("--dtype"),
            std::string::npos);
  // a device this machine lacks is refused as the flag is read, before anything loads
  if (emovlm::ComputeDevice().resolved() == emovlm::ComputeDevice::cpu()) {
    const std::string cuda =
        parse_error({"classify", "--vlm", "v", "--device", "cuda:1", "image.png"});
    EXPECT_NE(cuda.find("--device"), std::string::npos) << cuda;
    EXPECT_NE(cuda.find("no CUDA device"), std::string::npos) << cuda;
  }
  EXPECT_NE(parse_error({"gate", "--cache", "c", "--distill", "d", "--out", "o", "--kind", "sum"})
                .find("--kind"),
            std::string::npos);
  EXPECT_NE(parse_error({"extract", "--vlm", "v", "--teacher", "t", "--data", "d", "--out", "o",
                         "--split", "tset"})
                .find("--split"),
            std::string::npos);
  // one way to tune at a time
  const std::string modes =
      parse_error({"tune", "--vlm", "v", "--instructions", "i", "--out", "o", "--full", "--lora"});
  EXPECT_EQ(modes.find("ExcludesError"), 0u) << modes;
  // --full names the default; it cannot be turned off (--lora or --qlora say that)
  EXPECT_NE(
      parse_error({"tune", "--vlm", "v", "--instructions", "i", "--out", "o", "--full=false"}), "");
  EXPECT_EQ(parse_error({"distill", "--cache", "c", "--out", "o", "--resume", "--overwrite"})
                .find("ExcludesError"),
            0u);
}

// What the user reads (parse_error_message): a misspelled command or flag is named, with the
// nearest name, though CLI11 reports the requirement it left unmet first.
std::string user_message(const std::vector<std::string>& words) {
  Cli cli;
  std::vector<std::string> args(words.rbegin(), words.rend());
  try {
    cli.app.parse(args);
  } catch (const CLI::ParseError& e) {
    return emovlm::cli::parse_error_message(cli.app, e);
  }
  return "";
}

TEST(Cli, AMisspelledCommandOrFlagIsNamed) {
  EXPECT_EQ(user_message({"predct", "--bundle", "b", "a.jpg"}),
            "'predct' is not an emovlm command (did you mean predict?); emovlm --help lists them");
  EXPECT_EQ(user_message({"frobnicate"}),
            "'frobnicate' is not an emovlm command; emovlm --help lists them");
  EXPECT_EQ(user_message({"data", "chek", "--data", "x"}),
            "'chek' is not an emovlm data command (did you mean check?); emovlm data --help lists "
            "them");
  EXPECT_EQ(user_message({"teacher", "-q", "trian"}),
            "'trian' is not an emovlm teacher command (did you mean train?); emovlm teacher --help "
            "lists them");
  EXPECT_EQ(user_message({"predict", "--bundel", "b", "a.jpg"}),
            "emovlm predict has no flag --bundel (did you mean --bundle?); emovlm predict --help "
            "lists them");
  EXPECT_EQ(user_message({"predict", "--bundle", "b", "--devce=cpu", "a.jpg"}),
            "emovlm predict has no flag --devce (did you mean --device?); emovlm predict --help "
            "lists them");
  // other errors keep CLI11's words and say where the help is
  const std::string device = user_message({"classify", "--vlm", "v", "--device", "gpu", "a.png"});
  EXPECT_EQ(device.find("--device must be cpu, cuda, cuda:N or auto"), 0u) << device;
  EXPECT_NE(device.find("; see emovlm classify --help"), std::string::npos) << device;
  EXPECT_EQ(user_message({"predict", "a.jpg"}), "--bundle is required; see emovlm predict --help");
}

}  // namespace
