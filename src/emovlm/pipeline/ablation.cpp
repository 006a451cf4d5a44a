// Ablation sweeps.
#include "emovlm/pipeline/ablation.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"

#include "emovlm/core/progress.h"
#include "emovlm/data/metrics.h"
#include "emovlm/pipeline/evaluate.h"
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

const std::vector<std::string>& ablation_kinds() {
  static const std::vector<std::string> k{"depth", "alpha", "gate", "gate-data"};
  return k;
}

json run_ablation(const AblationOptions& o) {
  std::vector<std::string> values = o.values;
  if (std::find(ablation_kinds().begin(), ablation_kinds().end(), o.kind) == ablation_kinds().end())
    throw Error(cat("ablate: kind must be depth, alpha, gate or gate-data, not '", o.kind, "'"));
  if (values.empty()) {
    if (o.kind == "depth")
      values = {"1024", "1024,512", "1024,512,256", "1024,512,256,128", "1024,512,256,128,64"};
    else if (o.kind == "alpha")
      values = {"0", "0.1", "0.3", "0.5", "0.7", "0.9", "1"};
    else if (o.kind == "gate")
      values = gate_kinds();
    else
      values = gate_fit_ons();
  }
  const bool gate_data = o.kind == "gate-data";
  if (gate_data && o.val_cache.empty())
    for (const auto& v : values)
      if (v == "val")
        throw Error(
            "ablate gate-data: fitting on val needs --val-cache (or --values train,crossfit)");
  // the runs: (setting, gate kind, what the gate is fit on)
  struct Run {
    std::string setting, kind, fit_on;
  };
  std::vector<Run> runs;
  for (const auto& v : values) {
    if (gate_data)
      for (const auto& k : gate_kinds()) runs.push_back({v + " / " + k, k, v});
    else
      runs.push_back({v, o.kind == "gate" ? v : o.gate.kind, o.gate.fit_on});
  }
  OutputLock lock(o.out, OutputLock::Kind::Directory);
  // the cross-fit's fold heads, shared by every gate of the sweep (made afresh for each sweep)
  const std::string crossfit_dir = (fs::path(o.out) / "crossfit").string();
  if (is_directory(crossfit_dir)) remove_tree(crossfit_dir);
  json rows = json::array();
  std::string shared_head;
  for (size_t i = 0; i < runs.size(); ++i) {
    const Run& run = runs[i];
    const std::string dir = (fs::path(o.out) / cat("run-", i + 1)).string();
    std::fprintf(stderr, "[ablate %s] %s = %s\n", o.kind.c_str(), o.kind.c_str(),
                 run.setting.c_str());
    DistillOptions d = o.distill;
    d.cache = o.train_cache;
    d.val_cache = o.val_cache;
    d.quiet = true;
    d.resume = false;
    d.overwrite = true;  // the sweep's own runs, replaced when the sweep runs again
    if (o.kind == "depth") d.hidden = parse_sizes(run.setting);
    if (o.kind == "alpha") d.alpha = std::stod(run.setting);
    std::string head_dir = dir + "/distill";
    if (o.kind == "gate" || gate_data) {
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
    GateOptions g = o.gate;
    g.cache = o.train_cache;
    g.val_cache = o.val_cache;
    g.distill = head_dir;
    g.kind = run.kind;
    g.fit_on = run.fit_on;
    g.crossfit_dir = o.kind == "depth" || o.kind == "alpha"
                         ? ""
                         : crossfit_dir;  // the same head: the same folds
    g.out = dir + "/gate";
    g.resume = false;
    g.overwrite = true;
    json gate_report = train_gate(g);
    json rep = evaluate_cache({o.test_cache, head_dir, g.out, ""});
    json row = {{o.kind, run.setting},
                {"head_accuracy", rep["models"]["distill_head"]["accuracy"]},
                {"head_parameters", rep["models"]["distill_head"]["parameters"]},
                {"emovlm_kd_accuracy", rep["models"]["emovlm_kd"]["accuracy"]},
                {"emovlm_kd_macro_f1", rep["models"]["emovlm_kd"]["macro_f1"]},
                {"gate_parameters", rep["models"]["emovlm_kd"]["gate_parameters"]},
                {"gate_val_accuracy", gate_report["best_val_accuracy"]},
                {"gate_optimizer_steps", gate_report["optimizer_steps"]},
                {"vlm_accuracy", rep["models"]["vlm"]["accuracy"]},
                {"teacher_accuracy", rep["models"]["teacher"]["accuracy"]}};
    if (gate_data) row["fit_on"] = run.fit_on, row["gate"] = run.kind;
    rows.push_back(row);
  }
  auto val_cell = [](const json& v) {
    return v.is_number() ? pct(v.get<double>()) : std::string("-");
  };
  std::vector<std::vector<std::string>> table;
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& r = rows[i];
    if (gate_data)
      table.push_back({std::to_string(i + 1), r["fit_on"].get<std::string>(),
                       r["gate"].get<std::string>(), pct(r["head_accuracy"]),
                       val_cell(r["gate_val_accuracy"]), pct(r["emovlm_kd_accuracy"]),
                       pct(r["emovlm_kd_macro_f1"])});
    else
      table.push_back({std::to_string(i + 1), r[o.kind].get<std::string>(),
                       std::to_string(r["head_parameters"].get<int64_t>()), pct(r["head_accuracy"]),
                       std::to_string(r["gate_parameters"].get<int64_t>()),
                       pct(r["emovlm_kd_accuracy"]), pct(r["emovlm_kd_macro_f1"])});
  }
  std::string md =
      cat("# Ablation: ", o.kind, "\n\nTest cache: ", o.test_cache, " (VLM ",
          pct(rows[0]["vlm_accuracy"]), "%, teacher ", pct(rows[0]["teacher_accuracy"]), "%).\n\n");
  if (gate_data)
    md += markdown_table({"#", "gate fit on", "gate", "head accuracy %", "gate val accuracy %",
                          "EmoVLM-KD accuracy %", "EmoVLM-KD macro-F1 %"},
                         table) +
          "\nThe gate's validation accuracy is that of its best epoch on the validation cache "
          "(none when it is fit on "
          "it). `train`: the training cache, where the head and the VLM have seen every image; "
          "`val`: the validation "
          "cache; `crossfit`: the training cache with each image's head output from a head that "
          "did not see it.\n";
  else
    md += markdown_table({"#", o.kind, "head parameters", "head accuracy %", "gate parameters",
                          "EmoVLM-KD accuracy %", "EmoVLM-KD macro-F1 %"},
                         table);
  std::vector<BarSeries> series;
  if (gate_data) {
    // one group per gate kind, one bar per fit
    const unsigned char colours[3][3] = {{90, 140, 200}, {220, 120, 40}, {80, 170, 90}};
    const size_t groups = gate_kinds().size();
    for (size_t f = 0; f < values.size(); ++f) {
      BarSeries s{
          {}, {colours[f % 3][0], colours[f % 3][1], colours[f % 3][2]}, "fit on " + values[f]};
      for (size_t k = 0; k < groups; ++k)
        s.values.push_back(rows[f * groups + k]["emovlm_kd_accuracy"]);
      series.push_back(s);
    }
    md +=
        "\n`ablation.png`: EmoVLM-KD's test accuracy per gate, one bar per fit, with the VLM's and "
        "the teacher's.\n";
  } else {
    BarSeries head{{}, {90, 140, 200}, "distillation head"}, full{{}, {220, 120, 40}, "EmoVLM-KD"};
    for (const auto& r : rows)
      head.values.push_back(r["head_accuracy"]), full.values.push_back(r["emovlm_kd_accuracy"]);
    series = {head, full};
    md +=
        "\n`ablation.png`: test accuracy per setting, the distillation head's and EmoVLM-KD's, "
        "with the VLM's and the "
        "teacher's.\n";
  }
  json out = {{"kind", o.kind},
              {"rows", rows},
              {"test_cache", o.test_cache},
              {"train_cache", o.train_cache}};
  write_file_atomic((fs::path(o.out) / "ablation.json").string(), out.dump(1) + "\n");
  write_file_atomic((fs::path(o.out) / "ablation.md").string(), md);
  {
    BarChart chart;
    chart.title = "Ablation: " + o.kind;
    chart.x_label = o.kind == "depth"   ? "head hidden sizes"
                    : o.kind == "alpha" ? "distillation weight alpha"
                                        : "gate kind";
    chart.y_label = o.kind == "gate-data" ? "EmoVLM-KD test accuracy (%)" : "test accuracy (%)";
    if (gate_data)
      chart.groups = gate_kinds();
    else
      for (const json& r : rows) chart.groups.push_back(r[o.kind].get<std::string>());
    chart.series = series;
    const double vlm = rows[0]["vlm_accuracy"], teacher = rows[0]["teacher_accuracy"];
    chart.lines = {{"VLM " + pct(vlm) + "%", vlm, {40, 150, 80}},
                   {"teacher " + pct(teacher) + "%", teacher, {150, 80, 170}}};
    if (o.kind == "gate" || gate_data) {  // one head under every gate
      const double head = rows[0]["head_accuracy"];
      chart.lines.push_back({"head " + pct(head) + "%", head, {90, 90, 90}});
    }
    write_bar_chart((fs::path(o.out) / "ablation.png").string(), chart);
  }
  out["markdown"] = md;
  return out;
}

}  // namespace emovlm
