// Ablation sweeps.
#include "emovlm/pipeline/ablation.h"

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"

#include <sstream>
#include "emovlm/core/progress.h"
#include "emovlm/pipeline/evaluate.h"
#include "emovlm/pipeline/metrics.h"
#include "emovlm/pipeline/plot.h"
#include "emovlm/train/distill.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {
std::vector<int64_t> parse_sizes(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}
std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", 100 * v);
  return b;
}
}  // namespace

json run_ablation(const AblationOptions& o) {
  std::vector<std::string> values = o.values;
  if (values.empty()) {
    if (o.kind == "depth") values = {"1024", "1024,512", "1024,512,256", "1024,512,256,128", "1024,512,256,128,64"};
    else if (o.kind == "alpha") values = {"0", "0.1", "0.3", "0.5", "0.7", "0.9", "1"};
    else if (o.kind == "gate") values = gate_kinds();
    else throw Error(cat("ablate: kind must be depth, alpha or gate, not '", o.kind, "'"));
  }
  OutputLock lock(o.out, OutputLock::Kind::Directory);
  json rows = json::array();
  std::string shared_head;
  for (size_t i = 0; i < values.size(); ++i) {
    const std::string& v = values[i];
    const std::string run = (fs::path(o.out) / cat("run-", i + 1)).string();
    std::fprintf(stderr, "[ablate %s] %s = %s\n", o.kind.c_str(), o.kind.c_str(), v.c_str());
    DistillOptions d;
    d.cache = o.train_cache;
    d.val_cache = o.val_cache;
    d.epochs = o.distill_epochs;
    d.batch_size = o.batch_size;
    d.seed = o.seed;
    d.quiet = true;
    d.overwrite = true;  // the sweep's own runs, replaced when the sweep runs again
    if (o.kind == "depth") d.hidden = parse_sizes(v);
    if (o.kind == "alpha") d.alpha = std::stod(v);
    std::string head_dir = run + "/distill";
    if (o.kind == "gate") {
      // one head for every gate
      if (shared_head.empty()) {
        d.out = (fs::path(o.out) / "distill").string();
        train_distill_head(d);
        shared_head = d.out;
      }
      head_dir = shared_head;
    } else {
      d.out = head_dir;
      train_distill_head(d);
    }
    GateOptions g;
    g.cache = o.train_cache;
    g.val_cache = o.val_cache;
    g.distill = head_dir;
    g.kind = o.kind == "gate" ? v : "concat";
    g.out = run + "/gate";
    g.epochs = o.gate_epochs;
    g.batch_size = o.batch_size;
    g.seed = o.seed;
    g.overwrite = true;
    train_gate(g);
    json rep = evaluate_cache({o.test_cache, head_dir, g.out, ""});
    rows.push_back({{o.kind, v}, {"head_accuracy", rep["models"]["distill_head"]["accuracy"]},
                    {"head_parameters", rep["models"]["distill_head"]["parameters"]},
                    {"emovlm_kd_accuracy", rep["models"]["emovlm_kd"]["accuracy"]},
                    {"emovlm_kd_macro_f1", rep["models"]["emovlm_kd"]["macro_f1"]},
                    {"gate_parameters", rep["models"]["emovlm_kd"]["gate_parameters"]},
                    {"vlm_accuracy", rep["models"]["vlm"]["accuracy"]},
                    {"teacher_accuracy", rep["models"]["teacher"]["accuracy"]}});
  }
  std::vector<std::vector<std::string>> table;
  BarSeries head{{}, {90, 140, 200}}, full{{}, {220, 120, 40}};
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& r = rows[i];
    table.push_back({std::to_string(i + 1), r[o.kind].get<std::string>(), std::to_string(r["head_parameters"].get<int64_t>()),
                     pct(r["head_accuracy"]), std::to_string(r["gate_parameters"].get<int64_t>()), pct(r["emovlm_kd_accuracy"]),
                     pct(r["emovlm_kd_macro_f1"])});
    head.values.push_back(r["head_accuracy"]);
    full.values.push_back(r["emovlm_kd_accuracy"]);
  }
  std::string md = cat("# Ablation: ", o.kind, "\n\nTest cache: ", o.test_cache, " (VLM ", pct(rows[0]["vlm_accuracy"]),
                       "%, teacher ", pct(rows[0]["teacher_accuracy"]), "%).\n\n");
  md += markdown_table({"#", o.kind, "head parameters", "head accuracy %", "gate parameters", "EmoVLM-KD accuracy %",
                        "EmoVLM-KD macro-F1 %"},
                       table);
  md += "\n`ablation.png`: test accuracy per setting (#), blue = distillation head, orange = EmoVLM-KD.\n";
  json out = {{"kind", o.kind}, {"rows", rows}, {"test_cache", o.test_cache}, {"train_cache", o.train_cache}};
  write_file_atomic((fs::path(o.out) / "ablation.json").string(), out.dump(1) + "\n");
  write_file_atomic((fs::path(o.out) / "ablation.md").string(), md);
  {
    BarChart chart;
    chart.title = "Ablation: " + o.kind;
    chart.x_label = o.kind == "depth" ? "head hidden sizes" : o.kind == "alpha" ? "distillation weight alpha" : "gate kind";
    chart.y_label = "test accuracy (%)";
    for (const json& r : rows) chart.groups.push_back(r[o.kind].get<std::string>());
    head.name = "distillation head";
    full.name = "EmoVLM-KD";
    chart.series = {head, full};
    const double vlm = rows[0]["vlm_accuracy"], teacher = rows[0]["teacher_accuracy"];
    chart.lines = {{"VLM " + pct(vlm) + "%", vlm, {40, 150, 80}}, {"teacher " + pct(teacher) + "%", teacher, {150, 80, 170}}};
    write_bar_chart((fs::path(o.out) / "ablation.png").string(), chart);
  }
  out["markdown"] = md;
  return out;
}

}  // namespace emovlm
