// `emovlm inspect PATH`: the tensors of a safetensors file or checkpoint directory.
#include <cstdio>
#include <iostream>
#include <memory>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"

namespace emovlm::cli {

namespace {

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", b, units[u]);
  return buf;
}

struct InspectArgs {
  std::string path;
  bool as_json = false;
};

void run_inspect(const InspectArgs& a) {
  Checkpoint ck(a.path);
  auto names = ck.names();
  if (a.as_json) {
    json out = json::object();
    out["path"] = a.path;
    out["files"] = json::array();
    for (const auto& f : ck.files()) out["files"].push_back(f->path());
    out["metadata"] = ck.metadata();
    out["tensors"] = json::array();
    for (const auto& n : names) {
      const TensorView& t = ck.get(n);
      out["tensors"].push_back(
          {{"name", n}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"bytes", t.nbytes}});
    }
    out["total_bytes"] = ck.total_bytes();
    std::cout << out.dump(1) << "\n";
    return;
  }
  size_t width = 4;
  for (const auto& n : names) width = std::max(width, n.size());
  std::printf("%-*s  %-7s  %-22s  %s\n", static_cast<int>(width), "name", "dtype", "shape",
              "bytes");
  uint64_t params = 0;
  for (const auto& n : names) {
    const TensorView& t = ck.get(n);
    params += static_cast<uint64_t>(t.numel());
    std::printf("%-*s  %-7s  %-22s  %zu\n", static_cast<int>(width), n.c_str(), dtype_name(t.dtype),
                shape_str(t.shape).c_str(), t.nbytes);
  }
  std::printf("%zu tensors, %llu elements, %s in %zu file(s)\n", names.size(),
              static_cast<unsigned long long>(params),
              human_bytes(static_cast<double>(ck.total_bytes())).c_str(), ck.files().size());
  for (const auto& kv : ck.metadata())
    std::printf("metadata %s = %s\n", kv.first.c_str(), kv.second.c_str());
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "List the tensors of a safetensors file or checkpoint directory");
  cmd->add_option("path", args->path,
                  "a .safetensors file, or a directory (model.safetensors or a sharded index)")
      ->required();
  add_json_flag(cmd, args->as_json, "print JSON instead of a table");
  cmd->callback([args] { run_inspect(*args); });
}

}  // namespace emovlm::cli
