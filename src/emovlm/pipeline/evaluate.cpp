// Evaluation and reports.
#include "emovlm/pipeline/evaluate.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/data/metrics.h"
#include "emovlm/models/gates.h"
#include "emovlm/models/heads.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/models/weights.h"
#include "emovlm/pipeline/extract.h"
#include "emovlm/pipeline/report_html.h"

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
  if (n >= 1000000000)
    std::snprintf(b, sizeof b, "%.2fB", n / 1e9);
  else if (n >= 1000000)
    std::snprintf(b, sizeof b, "%.2fM", n / 1e6);
  else
    std::snprintf(b, sizeof b, "%lld", static_cast<long long>(n));
  return b;
}
}  // namespace

json evaluate_cache(const EvaluateOptions& o) {
  FeatureCache c = FeatureCache::load(o.cache);
  json hcfg, gcfg;
  DistillHead head = DistillHeadImpl::from_pretrained(o.distill, &hcfg);
  if (hcfg["labels"].get<std::vector<std::string>>() != c.labels)
    throw Error(cat(o.distill, ": the head's labels ", hcfg["labels"].dump(),
                    " differ from the cache's ", json(c.labels).dump()));
  if (hcfg.contains("vlm_identity"))
    check_same_vlm(hcfg["vlm_identity"], cat("the head ", o.distill),
                   vlm_identity_of_cache(c.manifest), cat("the cache ", o.cache));
  torch::Tensor hl = head_logits(*head, c.features);
  std::vector<int> truth = to_vec(c.targets);
  std::vector<int> vlm = to_vec(c.vlm_answer), teacher = to_vec(c.teacher_logits.argmax(-1)),
                   hd = to_vec(hl.argmax(-1));
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
  models["teacher"]["display_name"] = classifier_display_name(models["teacher"]["arch"]);
  add("distill_head", hd, count_parameters(*head));
  json report = {
      {"cache",
       o.out.empty() ? o.cache : store_path(o.cache, (fs::path(o.out) / "report.json").string())},
      {"labels", c.labels},
      {"images", c.size()},
      {"vlm_mode", in["vlm_mode"]}};
  std::vector<int> fused;
  if (!o.gate.empty()) {
    Gate gate = GateImpl::from_pretrained(o.gate, &gcfg);
    torch::NoGradGuard ng;
    fused = to_vec(gate->forward(c.vlm_input(gcfg["vlm_input"]), hl).argmax(-1));
    add("emovlm_kd", fused, count_parameters(*gate) + count_parameters(*head));
    models["emovlm_kd"]["gate"] = gcfg["kind"];
    models["emovlm_kd"]["gate_parameters"] = count_parameters(*gate);
  }
  // the head's training cache, when its report names one that is still there
  const std::string head_report = (fs::path(o.distill) / "report.json").string();
  if (file_exists(head_report)) {
    const std::string train_cache =
        resolve_stored_path(read_json_file(head_report).value("cache", ""), head_report);
    if (!train_cache.empty() && file_exists((fs::path(train_cache) / "manifest.json").string()))
      report["test_images_in_training"] = warn_shared_images("test", o.cache, train_cache, false);
  }
  report["complementarity"] = {
      {"vlm_vs_teacher", complementarity(vlm, teacher, truth).to_json("vlm", "teacher")},
      {"vlm_vs_head", complementarity(vlm, hd, truth).to_json("vlm", "head")}};
  if (o.bootstrap > 0) {
    report["bootstrap"] = {{"resamples", o.bootstrap}, {"seed", o.seed}, {"level", 0.95}};
    auto span = [](const Interval& i) { return json::array({i.lo, i.hi}); };
    auto add_intervals = [&](const std::string& name, const std::vector<int>& pred) {
      const BootstrapIntervals b = bootstrap_intervals(pred, truth, C, o.bootstrap, o.seed);
      json f1 = json::object();
      for (int k = 0; k < C; ++k) f1[c.labels[k]] = span(b.f1[k]);
      models[name]["interval"] = {
          {"accuracy", span(b.accuracy)}, {"macro_f1", span(b.macro_f1)}, {"f1", f1}};
    };
    add_intervals("vlm", vlm);
    add_intervals("teacher", teacher);
    add_intervals("distill_head", hd);
    if (!fused.empty()) add_intervals("emovlm_kd", fused);
    // the oracle: an image counts when either input of the gate is right
    std::vector<int> either(truth.size());
    for (size_t i = 0; i < truth.size(); ++i) either[i] = vlm[i] == truth[i] || hd[i] == truth[i];
    const double oracle =
        truth.empty() ? 0.0 : std::count(either.begin(), either.end(), 1) / double(truth.size());
    report["oracle"] = {{"accuracy", oracle},
                        {"interval", span(bootstrap_mean(either, o.bootstrap, o.seed))}};
    if (!fused.empty()) {
      json gain = json::object();
      for (const auto& [name, pred] :
           {std::pair<std::string, const std::vector<int>*>{"vlm", &vlm}, {"distill_head", &hd}}) {
        int64_t only_fused = 0, only_other = 0;
        for (size_t i = 0; i < truth.size(); ++i) {
          only_fused += fused[i] == truth[i] && (*pred)[i] != truth[i];
          only_other += fused[i] != truth[i] && (*pred)[i] == truth[i];
        }
        gain[name] = {{"difference", models["emovlm_kd"]["accuracy"].get<double>() -
                                         models[name]["accuracy"].get<double>()},
                      {"interval", span(bootstrap_accuracy_difference(fused, *pred, truth,
                                                                      o.bootstrap, o.seed))},
                      {"only_emovlm_kd_right", only_fused},
                      {"only_" + name + "_right", only_other},
                      {"mcnemar_p", mcnemar_exact_p(only_fused, only_other)}};
      }
      report["gain"] = gain;
    }
  }
  report["models"] = std::move(models);
  // the validation curves of the head and the gate (their metrics.jsonl, when still there)
  json curves = json::object();
  for (const auto& [stage, dir] :
       {std::pair<std::string, std::string>{"distill", o.distill}, {"gate", o.gate}}) {
    const std::string path = (fs::path(dir) / "metrics.jsonl").string();
    if (dir.empty() || !file_exists(path)) continue;
    json points = json::array();
    std::istringstream in(read_file(path));
    for (std::string line; std::getline(in, line);) {
      const json j = json::parse(line, nullptr, false);
      if (j.is_object() && j.contains("epoch"))
        points.push_back({{"epoch", j["epoch"]},
                          {"step", j.value("step", json(nullptr))},
                          {"train_loss", j.value("train_loss", json(nullptr))},
                          {"val_accuracy", j.value("val_accuracy", json(nullptr))}});
    }
    curves[stage] = points;
  }
  if (!curves.empty()) report["curves"] = curves;
  if (!fused.empty()) {
    const double best_input = std::max(report["models"]["vlm"]["accuracy"].get<double>(),
                                       report["models"]["distill_head"]["accuracy"].get<double>());
    report["gate_beats_inputs"] =
        report["models"]["emovlm_kd"]["accuracy"].get<double>() > best_input;
  }
  if (!o.out.empty()) {
    OutputLock lock(o.out, OutputLock::Kind::Directory);
    write_file_atomic((fs::path(o.out) / "report.json").string(), report.dump(1) + "\n");
    write_file_atomic((fs::path(o.out) / "report.md").string(), evaluation_markdown(report));
    write_file_atomic((fs::path(o.out) / "report.html").string(), evaluation_html(report));
  }
  return report;
}

std::string models_table_markdown(const std::vector<std::pair<std::string, json>>& rows) {
  // a figure and, when the report has one, its 95% interval: "66.25 (58.75-73.75)"
  auto with_interval = [](const json& m, const char* key) {
    std::string cell = pct(m[key].get<double>());
    if (m.contains("interval") && m["interval"].contains(key))
      cell += cat(" (", pct(m["interval"][key][0].get<double>()), "-",
                  pct(m["interval"][key][1].get<double>()), ")");
    return cell;
  };
  std::vector<std::vector<std::string>> cells;
  bool intervals = false;
  for (const auto& [label, m] : rows) {
    intervals = intervals || m.contains("interval");
    cells.push_back({label,
                     m["parameters"].is_number() ? human(m["parameters"].get<int64_t>()) : "?",
                     with_interval(m, "accuracy"), with_interval(m, "macro_f1"),
                     std::to_string(m["unparsable"].get<int64_t>())});
  }
  const std::string ci = intervals ? " (95% CI)" : "";
  return markdown_table({"model", "parameters", "accuracy %" + ci, "macro-F1 %" + ci, "unparsable"},
                        cells);
}

namespace {

// What the gain of EmoVLM-KD over one input means, in words.
std::string gain_sentence(const std::string& input, const json& g, int64_t images) {
  const double d = g["difference"].get<double>(), lo = g["interval"][0].get<double>(),
               hi = g["interval"][1].get<double>();
  const double p = g["mcnemar_p"].get<double>();
  const int64_t only_kd = g["only_emovlm_kd_right"].get<int64_t>();
  int64_t only_other = 0;
  for (const auto& [k, v] : g.items())
    if (k != "only_emovlm_kd_right" && k.rfind("only_", 0) == 0) only_other = v.get<int64_t>();
  char pbuf[32];
  std::snprintf(pbuf, sizeof pbuf, p < 0.001 ? "%.1e" : "%.3f", p);
  std::string s = cat("- Over ", input, ": ", d >= 0 ? "+" : "", pct(d), " points (95% CI ",
                      pct(lo), " to ", pct(hi), "); EmoVLM-KD alone is right on ", only_kd,
                      only_kd == 1 ? " image, " : " images, ", input, " alone on ", only_other,
                      " (of ", images, "); McNemar's exact p = ", pbuf, ". ");
  if (only_kd == 0 && only_other == 0)
    s += cat("The two are right on the same images.");
  else if (lo > 0)
    s += "The gate beats it.";
  else if (hi < 0)
    s += cat("**The gate loses to it**, by ", pct(-d), " points: fusing costs accuracy here.");
  else
    s += "The difference is within chance on this test set.";
  return s + "\n";
}

}  // namespace

std::string gain_markdown(const json& r) {
  std::string md;
  if (r.contains("gain")) {
    md += "\nThe gate against its inputs (EmoVLM-KD minus each; paired over the same images):\n\n";
    md += gain_sentence("the VLM", r["gain"]["vlm"], r["images"].get<int64_t>());
    md += gain_sentence("the distillation head", r["gain"]["distill_head"],
                        r["images"].get<int64_t>());
  } else if (r.contains("gate_beats_inputs")) {
    md += r["gate_beats_inputs"].get<bool>()
              ? "\nThe gate beats both of its inputs.\n"
              : "\nThe gate does not beat the better of its inputs on this data.\n";
  }
  if (r.contains("oracle"))
    md += cat("\nOracle (the VLM or the head right): ", pct(r["oracle"]["accuracy"].get<double>()),
              "% (95% CI ", pct(r["oracle"]["interval"][0].get<double>()), "-",
              pct(r["oracle"]["interval"][1].get<double>()),
              "): what a gate that always picked the right input would reach.\n");
  if (r.contains("bootstrap"))
    md += cat("\nIntervals: percentile bootstrap over the test images, ",
              r["bootstrap"]["resamples"].get<int64_t>(), " resamples (seed ",
              r["bootstrap"]["seed"].get<uint64_t>(), ").\n");
  return md;
}

std::string evaluation_markdown(const json& r) {
  std::string md =
      cat("# Evaluation on ", r["cache"].get<std::string>(), " (", r["images"].get<int64_t>(),
          " images)\n\n", "The figures as charts: `report.html` beside this file.\n\n");
  std::vector<std::pair<std::string, json>> rows;
  const json& models = r["models"];
  const std::string teacher =
      "Teacher (" +
      classifier_display_name(models.contains("teacher") ? models["teacher"].value("arch", "vit")
                                                         : "vit") +
      ")";
  const std::pair<const char*, std::string> names[] = {{"vlm", "VLM (Qwen2-VL)"},
                                                       {"teacher", teacher},
                                                       {"distill_head", "Distillation head"},
                                                       {"emovlm_kd", "EmoVLM-KD"}};
  for (const auto& [key, label] : names)
    if (models.contains(key)) rows.emplace_back(label, models[key]);
  md += models_table_markdown(rows);
  md += "\nComplementarity (Figure 1):\n\n";
  std::vector<std::vector<std::string>> crow;
  for (const auto& [key, a, b] :
       {std::tuple<const char*, const char*, const char*>{"vlm_vs_teacher", "vlm", "teacher"},
        {"vlm_vs_head", "vlm", "head"}}) {
    const json& p = r["complementarity"][key]["percent"];
    crow.push_back(
        {key, cat(p["both_right"].get<double>()), cat(p[std::string("only_") + a].get<double>()),
         cat(p[std::string("only_") + b].get<double>()), cat(p["both_wrong"].get<double>())});
  }
  md += markdown_table({"pair", "both right %", "only first %", "only second %", "both wrong %"},
                       crow);
  md += gain_markdown(r);
  return md;
}

}  // namespace emovlm
