// `emovlm bundle`: what prediction needs (the VLM's place, its adapter, the head, the gate) in
// one folder.
#include <cstdio>
#include <memory>

#include "commands.h"
#include "emovlm/pipeline/predictor.h"

namespace emovlm::cli {

void add_bundle_command(CLI::App& app) {
  auto b = std::make_shared<BundleSpec>();
  auto out = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("bundle", "Gather what prediction needs into one directory");
  add_vlm_flag(cmd, b->vlm);
  add_adapter_flag(cmd, b->adapter);
  add_distill_flag(cmd, b->distill);
  add_gate_dir_flag(cmd, b->gate, true);
  add_dtype_flag(cmd, b->dtype, "the VLM's compute dtype when predicting: bf16, f16 or f32");
  add_out_flag(cmd, *out, "the bundle's folder (bundle.json, the head and the gate)");
  cmd->callback([b, out] {
    write_bundle(*out, *b);
    std::printf("wrote %s/bundle.json\n", out->c_str());
  });
}

}  // namespace emovlm::cli
