// `emovlm instruct make` (stage 0 through an OpenAI-compatible endpoint) and `instruct import`.
#include <iostream>
#include <memory>

#include "commands.h"
#include "emovlm/core/error.h"
#ifdef EMOVLM_HAVE_HTTP
#include <nlohmann/json.hpp>

#include "emovlm/data/instructions.h"
#endif

namespace emovlm::cli {

void add_instruct_command(CLI::App& app) {
  CLI::App* ins = app.add_subcommand("instruct", "Stage 0: emotion instruction data");
  ins->require_subcommand(1);
#ifdef EMOVLM_HAVE_HTTP
  auto o = std::make_shared<InstructOptions>();
  CLI::App* mk = ins->add_subcommand(
      "make", "Ask an OpenAI-compatible endpoint for observation/reasoning answers (resumable)");
  add_data_flag(mk, o->data, "ROOT/{train,val,test}/<emotion>/ or a manifest");
  add_labels_flag(mk, o->labels, "the label set: mikels8, ekman6, binary or a,b,c")
      ->capture_default_str();
  add_split_flag(mk, o->split);
  add_out_flag(mk, o->out, "instruction JSONL (appended; images already there are skipped)");
  mk->add_option("--endpoint", o->endpoint, "the API's base URL, e.g. https://api.openai.com/v1")
      ->required()
      ->group("Endpoint");
  mk->add_option("--model", o->model, "the endpoint's chat model, by its name there")
      ->required()
      ->group("Endpoint");
  mk->add_option("--api-key-env", o->api_key_env, "environment variable holding the API key")
      ->capture_default_str()
      ->group("Endpoint");
  mk->add_option("--concurrency", o->concurrency, "requests in flight")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group("Endpoint");
  mk->add_option("--max-retries", o->max_retries, "retries of a request on 429, 5xx and timeouts")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber)
      ->group("Endpoint");
  mk->add_option("--timeout", o->timeout_s, "seconds per request")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group("Endpoint");
  mk->callback([o] { std::cout << make_instructions(*o).dump(1) << std::endl; });
  struct ImportArgs {
    std::string format, src, out, labels = "mikels8", image_root;
  };
  auto im = std::make_shared<ImportArgs>();
  CLI::App* imp = ins->add_subcommand(
      "import", "The reference's annotation JSON or LLaVA conversation JSON -> JSONL");
  imp->add_option("--format", im->format,
                  "reference (the reference code's annotation JSON) or llava (conversations)")
      ->required()
      ->check(CLI::IsMember({"reference", "llava"}));
  imp->add_option("--src", im->src, "the JSON file")->required()->group(kDataGroup);
  add_out_flag(imp, im->out, "instruction JSONL");
  add_labels_flag(imp, im->labels, "the label set of the categorical examples")
      ->capture_default_str();
  imp->add_option(
      "--image-root", im->image_root,
      "what the source's relative image paths are relative to (default: the source file's folder)");
  imp->callback([im] {
    std::cout
        << import_instructions(im->format, im->src, im->out, im->labels, im->image_root).dump(1)
        << std::endl;
  });
#else
  ins->callback([] {
    throw Error("this build has no HTTP client (cpp-httplib was not found at configure time)");
  });
#endif
}

}  // namespace emovlm::cli
