// `emovlm extract`: one pass over a split caching what the frozen models produce (the VLM's
// pooled visual features and answer, the teacher's logits); resumable, data parallel.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/pipeline/extract.h"

namespace emovlm::cli {

void add_extract_command(CLI::App& app) {
  auto x = std::make_shared<ExtractOptions>();
  CLI::App* cmd =
      app.add_subcommand("extract", "Cache the frozen models' outputs for a split (resumable)");
  add_vlm_flag(cmd, x->vlm);
  add_adapter_flag(cmd, x->adapter);
  add_teacher_flag(cmd, x->teacher);
  add_data_flag(cmd, x->data, "ROOT/{train,val,test}/<emotion>/ or a manifest");
  add_split_flag(cmd, x->split);
  add_dataset_flags(cmd, x->dataset);
  add_out_flag(cmd, x->out, "the cache folder (manifest.json and its shards)");
  cmd->add_option("--shard-size", x->shard_size, "images per shard (the resume granularity)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group(kOutputGroup);
  cmd->add_option("--vlm-mode", x->vlm_mode,
                  "score (label scores) or generate (the reference's sampling)")
      ->capture_default_str()
      ->check(CLI::IsMember({"score", "generate"}));
  cmd->add_option("--temperature", x->temperature, "generate mode: sampling temperature")
      ->capture_default_str()
      ->group("Sampling");
  cmd->add_option("--max-new-tokens", x->max_new_tokens, "generate mode: the longest answer")
      ->capture_default_str()
      ->group("Sampling");
  add_seed_flag(cmd, x->seed, "generate mode: sampling seed (mixed with each image's pixels)",
                "Sampling");
  add_dtype_flag(cmd, x->dtype, "the VLM's compute dtype: bf16, f16 or f32");
  add_dtype_flag(cmd, x->teacher_dtype,
                 "the teacher's: f32 (exact) or bf16 (autocast; a GPU's throughput)",
                 "--teacher-dtype", false);
  add_device_flag(cmd, x->device);
  cmd->add_option("--vlm-batch", x->vlm_batch,
                  "images per VLM forward (1: each alone, deterministic; 16 or more fills a GPU)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group(kDeviceGroup);
  cmd->add_option("--teacher-batch", x->teacher_batch, "images per teacher forward")
      ->capture_default_str()
      ->check(CLI::PositiveNumber)
      ->group(kDeviceGroup);
  add_workers_flag(cmd, x->workers);
  add_cuda_graph_flag(cmd, x->cuda_graph);
  cmd->callback([x] {
    nlohmann::json m = extract_features(*x);
    int64_t cached = 0, failed = 0;
    for (const auto& s : m["shards"])
      cached += s["cached"].get<int64_t>(), failed += static_cast<int64_t>(s["failures"].size());
    std::printf("%s: %lld images cached, %lld unreadable (listed in manifest.json)\n",
                x->out.c_str(), static_cast<long long>(cached), static_cast<long long>(failed));
  });
}

}  // namespace emovlm::cli
