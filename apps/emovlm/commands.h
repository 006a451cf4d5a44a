// The subcommands of the `emovlm` binary; each file adds one and stays thin (parse, call, print).
#pragma once

#include <CLI/CLI.hpp>

namespace emovlm::cli {

void add_inspect_command(CLI::App& app);
void add_preprocess_command(CLI::App& app);
void add_vlm_commands(CLI::App& app);       // chat, classify
void add_pipeline_commands(CLI::App& app);
void add_demo_commands(CLI::App& app);  // demo, tune, lora merge
void add_instruct_commands(CLI::App& app);  // teacher, extract, distill, gate, evaluate, bundle, predict

}  // namespace emovlm::cli
