// The subcommands of the `emovlm` binary; each file adds one and stays thin (parse, call, print).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "emovlm/data/dataset.h"
#include "flags.h"

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace emovlm::cli {

// The whole command line: the global flags, every subcommand, and the global flags again on each
// leaf subcommand (so that its --help lists them). Joining a launcher's process group happens
// once the command line is parsed (see app.cpp).
void build_app(CLI::App& app, GlobalFlags& globals);
// The one line a command line CLI11 refused gets: what was wrong and where its --help is; a
// misspelled command or flag is named, with the nearest name it may have meant.
std::string parse_error_message(const CLI::App& app, const CLI::ParseError& e);

// One function per subcommand, each in its own cmd_<name>.cpp.
void add_chat_command(CLI::App& app);
void add_classify_command(CLI::App& app);
void add_data_command(CLI::App& app);     // data convert, data check
void add_teacher_command(CLI::App& app);  // teacher train, teacher eval
void add_extract_command(CLI::App& app);
void add_distill_command(CLI::App& app);
void add_gate_command(CLI::App& app);
void add_evaluate_command(CLI::App& app);
void add_ablate_command(CLI::App& app);
void add_bundle_command(CLI::App& app);
void add_predict_command(CLI::App& app);
void add_demo_command(CLI::App& app);
void add_tune_command(CLI::App& app);
void add_lora_command(CLI::App& app);      // lora merge
void add_instruct_command(CLI::App& app);  // instruct make, instruct import
void add_serve_command(CLI::App& app);
void add_report_command(CLI::App& app);  // report-html
void add_inspect_command(CLI::App& app);
void add_preprocess_command(CLI::App& app);

// classify and predict: each argument is an image file, or a directory whose image files (any
// depth, sorted) are taken; an image that cannot be read is reported (stderr, or an
// {"image", "error"} entry with --json) and the others still run.
std::vector<std::string> image_arguments(const std::vector<std::string>& args);
// The positional "images" argument of classify and predict.
CLI::Option* add_images_arg(CLI::App* cmd, std::vector<std::string>& images);
// The results of classify or predict on image arguments, one call per image as they come: an
// unreadable image ({"image", "error"}) is reported in its place, the others printed by `print`,
// or with --json all collected; finish() prints the JSON array and fails naming how many images
// could not be read.
class ImageResults {
 public:
  ImageResults(bool as_json, std::function<void(const nlohmann::json&)> print);
  void operator()(const nlohmann::json& result);
  // `done`: what the command does to an image ("classified", "predicted").
  void finish(size_t images, const std::string& done);

 private:
  bool as_json_;
  std::function<void(const nlohmann::json&)> print_;
  nlohmann::json all_;
  size_t failed_ = 0;
};

// classify --data and predict --data (split_report.cpp): a labelled split instead of image
// arguments. add_split_flags adds --data, --split, --val-fraction, --split-seed and --out;
// chosen() says whether --data was given, and refuses both or neither of images and --data.
struct SplitArgs {
  std::string data, split = "test", out;
  DatasetOptions dataset;
  bool chosen(const std::vector<std::string>& images, const std::string& command) const;
};
void add_split_flags(CLI::App* cmd, SplitArgs& a, const std::string& what);
// Runs evaluate(on_result, journal) with a progress bar; with --out, the journal OUT.partial.jsonl
// (a killed run resumes from it) and the report written atomically at the end. Then prints the
// report as JSON, or the metrics of each of its models.
using SplitEvaluation = std::function<nlohmann::json(
    const std::function<void(const nlohmann::json&)>& on_result, const std::string& journal)>;
void run_split_report(const SplitArgs& a, bool as_json, const SplitEvaluation& evaluate);

}  // namespace emovlm::cli
