// Evaluation and reports.
#include "emovlm/pipeline/evaluate.h"

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/pipeline/feature_cache.h"
#include "emovlm/pipeline/metrics.h"
#include "emovlm/train/distill.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {
std::vector<int> to_vec(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kInt64).contiguous();
  return std::vector<int>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}
std::string pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", 100 * v);
  return b;
}
std::string human(int64_t n) {
  char b[32];
  if (n >= 1000000000) std::snprintf(b, sizeof b, "%.2fB", n / 1e9);
  else if (n >= 1000000) std::snprintf(b, sizeof b, "%.2fM", n / 1e6);
  else std::snprintf(b, sizeof b, "%lld", static_cast<long long>(n));
  return b;
}
}  // namespace

json evaluate_cache(const EvaluateOptions& o) {
  FeatureCache c = FeatureCache::load(o.cache);
  json hcfg, gcfg;
  DistillHead head = load_distill_head(o.distill, &hcfg);
  if (hcfg["labels"].get<std::vector<std::string>>() != c.labels)
    throw Error(cat(o.distill, ": the head's labels ", hcfg["labels"].dump(), " differ from the cache's ", json(c.labels).dump()));
  if (hcfg.contains("vlm_identity"))
    check_same_vlm(hcfg["vlm_identity"], cat("the head ", o.distill), vlm_identity_of_cache(c.manifest),
                   cat("the cache ", o.cache));
  torch::Tensor hl = head_logits(*head, c.features);
  std::vector<int> truth = to_vec(c.targets);
  std::vector<int> vlm = to_vec(c.vlm_answer), teacher = to_vec(c.teacher_logits.argmax(-1)), hd = to_vec(hl.argmax(-1));
  const int C = static_cast<int>(c.num_classes());
  json models = json::object();
  const json& in = c.manifest["inputs"];
  auto add = [&](const std::string& name, const std::vector<int>& pred, const json& params) {
    json r = classification_report(pred, truth, C).to_json(c.labels);
    r["parameters"] = params;
    models[name] = r;
  };
  // the parameter counts and the teacher's architecture the cache recorded (a cache of format 1
  // has none: null, and a ViT)
  const json counts = c.manifest.value("parameters", json::object());
  add("vlm", vlm, counts.value("vlm", json(nullptr)));
  add("teacher", teacher, counts.value("teacher", json(nullptr)));
  models["teacher"]["arch"] = counts.value("teacher_arch", "vit");
  add("distill_head", hd, head->num_parameters());
  json report = {{"cache", o.out.empty() ? o.cache : store_path(o.cache, (fs::path(o.out) / "report.json").string())},
                 {"labels", c.labels}, {"images", c.size()}, {"vlm_mode", in["vlm_mode"]}};
  std::vector<int> fused;
  if (!o.gate.empty()) {
    Gate gate = load_gate(o.gate, &gcfg);
    torch::NoGradGuard ng;
    fused = to_vec(gate->forward(c.vlm_input(gcfg["vlm_input"]), hl).argmax(-1));
    add("emovlm_kd", fused, gate->num_parameters() + head->num_parameters());
    models["emovlm_kd"]["gate"] = gcfg["kind"];
    models["emovlm_kd"]["gate_parameters"] = gate->num_parameters();
  }
  report["models"] = models;
  // the head's training cache, when its report names one that is still there
  const std::string head_report = (fs::path(o.distill) / "report.json").string();
  if (file_exists(head_report)) {
    const std::string train_cache = resolve_stored_path(read_json_file(head_report).value("cache", ""), head_report);
    if (!train_cache.empty() && file_exists((fs::path(train_cache) / "manifest.json").string()))
      report["test_images_in_training"] = warn_shared_images("test", o.cache, train_cache, false);
  }
  report["complementarity"] = {{"vlm_vs_teacher", complementarity(vlm, teacher, truth).to_json("vlm", "teacher")},
                               {"vlm_vs_head", complementarity(vlm, hd, truth).to_json("vlm", "head")}};
  if (!fused.empty()) {
    const double best_input = std::max(models["vlm"]["accuracy"].get<double>(), models["distill_head"]["accuracy"].get<double>());
    report["gate_beats_inputs"] = models["emovlm_kd"]["accuracy"].get<double>() > best_input;
  }
  if (!o.out.empty()) {
    OutputLock lock(o.out, OutputLock::Kind::Directory);
    write_file_atomic((fs::path(o.out) / "report.json").string(), report.dump(1) + "\n");
    write_file_atomic((fs::path(o.out) / "report.md").string(), evaluation_markdown(report));
  }
  return report;
}

std::string models_table_markdown(const std::vector<std::pair<std::string, json>>& rows) {
  std::vector<std::vector<std::string>> cells;
  for (const auto& [label, m] : rows)
    cells.push_back({label, m["parameters"].is_number() ? human(m["parameters"].get<int64_t>()) : "?",
                     pct(m["accuracy"].get<double>()),
                     pct(m["macro_f1"].get<double>()), std::to_string(m["unparsable"].get<int64_t>())});
  return markdown_table({"model", "parameters", "accuracy %", "macro-F1 %", "unparsable"}, cells);
}

std::string evaluation_markdown(const json& r) {
  std::string md = cat("# Evaluation on ", r["cache"].get<std::string>(), " (", r["images"].get<int64_t>(), " images)\n\n");
  std::vector<std::pair<std::string, json>> rows;
  const json& models = r["models"];
  const std::string teacher =
      "Teacher (" + classifier_display_name(models.contains("teacher") ? models["teacher"].value("arch", "vit") : "vit") + ")";
  const std::pair<const char*, std::string> names[] = {
      {"vlm", "VLM (Qwen2-VL)"}, {"teacher", teacher}, {"distill_head", "Distillation head"}, {"emovlm_kd", "EmoVLM-KD"}};
  for (const auto& [key, label] : names)
    if (models.contains(key)) rows.emplace_back(label, models[key]);
  md += models_table_markdown(rows);
  md += "\nComplementarity (Figure 1):\n\n";
  std::vector<std::vector<std::string>> crow;
  for (const auto& [key, a, b] : {std::tuple<const char*, const char*, const char*>{"vlm_vs_teacher", "vlm", "teacher"},
                                  {"vlm_vs_head", "vlm", "head"}}) {
    const json& p = r["complementarity"][key]["percent"];
    crow.push_back({key, cat(p["both_right"].get<double>()), cat(p[std::string("only_") + a].get<double>()),
                    cat(p[std::string("only_") + b].get<double>()), cat(p["both_wrong"].get<double>())});
  }
  md += markdown_table({"pair", "both right %", "only first %", "only second %", "both wrong %"}, crow);
  if (r.contains("gate_beats_inputs"))
    md += r["gate_beats_inputs"].get<bool>() ? "\nThe gate beats both of its inputs.\n"
                                             : "\nThe gate does not beat the better of its inputs on this data.\n";
  return md;
}

}  // namespace emovlm
