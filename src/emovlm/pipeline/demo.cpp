// The demo pipeline.
#include "emovlm/pipeline/demo.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/data/labels.h"
#include "emovlm/data/metrics.h"
#include "emovlm/data/synthetic.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/vit.h"
#include "emovlm/models/weights.h"
#include "emovlm/pipeline/evaluate.h"
#include "emovlm/pipeline/extract.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/text/bpe_train.h"
#include "emovlm/text/chat.h"
#include "emovlm/train/distill.h"
#include "emovlm/train/sft.h"
#include "emovlm/train/teacher.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

class Timer {
 public:
  double lap() {
    auto now = std::chrono::steady_clock::now();
    double s = std::chrono::duration<double>(now - t_).count();
    t_ = now;
    return s;
  }

 private:
  std::chrono::steady_clock::time_point t_ = std::chrono::steady_clock::now();
};

void say(const std::string& s) {
  std::fprintf(stderr, "[demo] %s\n", s.c_str());
}

std::string fmt_pct(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", 100 * v);
  return b;
}

// A tiny Qwen2-VL-shaped model for the demo's tokenizer.
Qwen2VLConfig demo_vlm_config(const Tokenizer& tok) {
  Qwen2VLConfig c;
  c.vision.depth = 2;
  c.vision.embed_dim = 64;
  c.vision.num_heads = 4;
  c.vision.mlp_ratio = 2;
  c.vision.hidden_size = 128;
  c.text.hidden_size = 128;
  c.text.intermediate_size = 256;
  c.text.num_hidden_layers = 2;
  c.text.num_attention_heads = 4;
  c.text.num_key_value_heads = 2;
  c.text.mrope_section = {4, 6, 6};
  c.text.vocab_size = tok.vocab_size();
  c.text.tie_word_embeddings = false;
  c.image_token_id = tok.require_id("<|image_pad|>");
  c.video_token_id = tok.require_id("<|video_pad|>");
  c.vision_start_token_id = tok.require_id("<|vision_start|>");
  c.vision_end_token_id = tok.require_id("<|vision_end|>");
  c.bos_token_id = tok.require_id("<|endoftext|>");
  c.eos_token_id = tok.require_id("<|im_end|>");
  return c;
}

// Where the demo writes each stage's product, under DemoOptions::out.
struct DemoPaths {
  std::string out, data, models, instructions, vlm_init, vlm_tuned, vit_init, teacher, distill,
      gate, eval, bundle;
  std::map<std::string, std::string> caches;  // split -> cache folder

  explicit DemoPaths(const std::string& o)
      : out(o),
        data(o + "/data"),
        models(o + "/models"),
        instructions(o + "/instructions.jsonl"),
        vlm_init(models + "/vlm-init"),
        vlm_tuned(models + "/vlm-tuned"),
        vit_init(models + "/vit-init"),
        teacher(models + "/teacher"),
        distill(models + "/distill"),
        gate(models + "/gate"),
        eval(o + "/eval"),
        bundle(o + "/bundle") {
    for (const char* split : {"train", "val", "test"}) caches[split] = o + "/cache/" + split;
  }
};

DatasetOptions demo_dataset_options() {
  DatasetOptions dopt;
  dopt.labels = "mikels8";
  return dopt;
}

// The synthetic dataset: log["data"] gets what write_synthetic_dataset reports.
Dataset write_demo_data(const DemoOptions& o, const DemoPaths& p, json& log) {
  SyntheticOptions so;
  so.seed = o.seed;
  if (o.quick) so.train_per_class = 8, so.val_per_class = 3, so.test_per_class = 4;
  say(cat("writing the synthetic dataset to ", p.data));
  remove_tree(p.data);
  log["data"] = write_synthetic_dataset(p.data, so);
  return load_dataset(p.data, demo_dataset_options());
}

// Stage 0: instruction data, with templated observation and reasoning answers instead of an
// endpoint's.
std::vector<InstructionExample> write_demo_instructions(const Dataset& ds, const DemoPaths& p) {
  std::vector<InstructionExample> inst = categorical_examples(ds.train, ds.labels);
  for (const auto& s : ds.train) {
    inst.push_back({s.path, ds.labels.labels[s.label], "observation", kObservationPrompt,
                    synthetic_observation(s.label)});
    inst.push_back({s.path, ds.labels.labels[s.label], "reasoning", kReasoningPrompt,
                    synthetic_reasoning(s.label)});
  }
  write_instructions(p.instructions, inst);
  say(cat("stage 0: ", inst.size(), " instructions in ", p.instructions));
  return inst;
}

// The VLM to tune: a byte-level BPE tokenizer trained on the instruction text, processor files,
// and a tiny Qwen2-VL with random weights, written as a checkpoint folder at p.vlm_init.
void write_demo_vlm(const DemoOptions& o, const Dataset& ds,
                    const std::vector<InstructionExample>& inst, const DemoPaths& p, json& log) {
  make_dirs(p.vlm_init);
  std::vector<std::string> corpus = {kEmotionSystemMessage, kQwenDefaultSystem,
                                     "<|im_start|>user\n", "<|im_start|>assistant\n"};
  for (const auto& e : inst) corpus.push_back(e.prompt), corpus.push_back(e.answer);
  for (const auto& l : ds.labels.labels) corpus.push_back(categorical_answer(l));
  train_bpe_tokenizer(corpus, o.quick ? 400 : 600, p.vlm_init + "/tokenizer.json");
  Tokenizer tok = Tokenizer::from_dir(p.vlm_init);
  write_file_atomic(p.vlm_init + "/tokenizer_config.json",
                    json({{"tokenizer_class", "Qwen2Tokenizer"},
                          {"eos_token", "<|im_end|>"},
                          {"pad_token", "<|endoftext|>"}})
                        .dump(1));
  // the VLM sees the 128x96 images at 56x28 pixels (2 visual tokens): colour survives, fine shapes
  // do not
  write_file_atomic(p.vlm_init + "/preprocessor_config.json",
                    json({{"min_pixels", 3136},
                          {"max_pixels", 3136},
                          {"patch_size", 14},
                          {"temporal_patch_size", 2},
                          {"merge_size", 2},
                          {"resample", 3},
                          {"image_processor_type", "Qwen2VLImageProcessor"}})
                        .dump(1));
  torch::manual_seed(o.seed);
  Qwen2VL vlm(demo_vlm_config(tok));
  init_random(*vlm, o.seed, 0.05);
  vlm->save_pretrained(p.vlm_init);
  log["vlm_parameters"] = count_parameters(*vlm);
  say(cat("tokenizer: ", tok.vocab_size(),
          " tokens; tiny VLM: ", log["vlm_parameters"].get<int64_t>(), " parameters"));
}

// Stage 1: instruction tuning of every weight (there is no pretrained model here).
json tune_demo_vlm(const DemoOptions& o, const DemoPaths& p) {
  SftOptions sft;
  sft.vlm = p.vlm_init;
  sft.instructions = p.instructions;
  sft.out = p.vlm_tuned;
  sft.epochs = o.quick ? 2 : 5;
  sft.seed = o.seed;
  sft.mask_prompt = true;  // a model from scratch would spend itself on the constant prompt
  sft.optim.lr = 1e-3;
  sft.optim.max_grad_norm = 1.0;
  remove_tree(p.vlm_tuned);
  return train_sft(sft);
}

// The teacher: a small ViT trained from scratch on the dataset.
json train_demo_teacher(const DemoOptions& o, const DemoPaths& p) {
  {
    VitConfig vc;
    vc.hidden_size = 64;
    vc.num_hidden_layers = 2;
    vc.num_attention_heads = 4;
    vc.intermediate_size = 128;
    vc.image_size = 64;
    vc.patch_size = 8;
    vc.num_labels = 8;
    torch::manual_seed(o.seed);
    VitForImageClassification vit(vc);
    init_random(*vit, o.seed + 1, 0.05);
    vit->save_pretrained(p.vit_init);
  }
  TeacherOptions to;
  to.data = p.data;
  to.init = p.vit_init;
  to.out = p.teacher;
  to.dataset = demo_dataset_options();
  to.epochs = o.quick ? 3 : 25;
  to.batch_size = 16;
  to.optim.lr = 1e-3;  // from scratch; the reference's 3e-5 fine-tunes a pretrained ViT
  to.seed = o.seed;
  remove_tree(p.teacher);
  return train_teacher(to);
}

// The feature cache: one pass per split over the frozen models.
void extract_demo_caches(const DemoPaths& p) {
  for (const char* split : {"train", "val", "test"}) {
    ExtractOptions x;
    x.vlm = p.vlm_tuned;
    x.teacher = p.teacher;
    x.data = p.data;
    x.split = split;
    x.dataset = demo_dataset_options();
    x.out = p.caches.at(split);
    x.dtype = ComputeDtype::f32;
    x.device = ComputeDevice::cpu();
    remove_tree(x.out);
    extract_features(x);
  }
}

// Stages 2 and 3: log["stage2"], log["stage3"] get their reports.
void train_demo_head_and_gate(const DemoOptions& o, const DemoPaths& p, json& log) {
  DistillOptions d;
  d.cache = p.caches.at("train");
  d.val_cache = p.caches.at("val");
  d.out = p.distill;
  d.hidden = {256};  // the product's defaults otherwise: at least 2,000 optimizer steps each
  d.seed = o.seed;
  remove_tree(d.out);
  log["stage2"] = train_distill_head(d);
  GateOptions g;
  g.cache = p.caches.at("train");
  g.val_cache = p.caches.at("val");
  g.distill = p.distill;
  g.out = p.gate;
  g.seed = o.seed;
  remove_tree(g.out);
  log["stage3"] = train_gate(g);
}

// A few test images through the bundle (at most 4, spread over the split), each with its label.
json demo_predictions(Predictor& pred, const Dataset& ds) {
  json predictions = json::array();
  const auto& test = ds.split("test");
  for (size_t i = 0; i < test.size() && predictions.size() < 4;
       i += std::max<size_t>(1, test.size() / 4)) {
    json r = pred.predict(test[i].path);
    r["label"] = ds.labels.labels[test[i].label];
    predictions.push_back(r);
  }
  return predictions;
}

// REPORT.md: the paper's Table 1/2 layout for this data, the complementarity, the gate, a few
// predictions and the time of each stage.
std::string demo_report_markdown(json log, json report, const json& predictions,
                                 const Dataset& ds) {
  const json& m = report["models"];
  std::vector<std::pair<std::string, json>> rows;
  const std::pair<const char*, const char*> names[] = {
      {"vlm", "VLM (tiny Qwen2-VL, tuned)"},
      {"teacher", "Teacher (tiny ViT)"},
      {"distill_head", "Distillation head"},
      {"emovlm_kd", "EmoVLM-KD (VLM + head + gate)"}};
  for (const auto& [k, label] : names) rows.emplace_back(label, m[k]);
  std::string md = "# EmoVLM-KD demo report\n\n";
  md +=
      cat("Synthetic dataset: ", log["data"]["images"].get<int64_t>(), " images (", ds.train.size(),
          " train, ", ds.val.size(), " val, ", ds.test.size(), " test), 8 classes, ",
          log["data"]["noisy_labels"].get<int64_t>(), " noisy labels.\n\n");
  md += "## Table 1/2: accuracy on the test split\n\n";
  md += models_table_markdown(rows);
  const json& fi = log["bundle_on_test_images"]["models"];
  md +=
      cat("\nThe bundle on the same test images, read from the files (`emovlm predict --bundle ... "
          "--data ...`, no "
          "cache): VLM ",
          fmt_pct(fi["vlm"]["accuracy"].get<double>()), "%, head ",
          fmt_pct(fi["distill_head"]["accuracy"].get<double>()), "%, EmoVLM-KD ",
          fmt_pct(fi["emovlm_kd"]["accuracy"].get<double>()), "%.\n");
  md += "\n## Complementarity (Figure 1)\n\n";
  std::vector<std::vector<std::string>> crow;
  for (const char* k : {"vlm_vs_teacher", "vlm_vs_head"}) {
    const json& c = report["complementarity"][k];
    std::vector<std::string> r = {k};
    for (auto it = c.begin(); it != c.end(); ++it)
      if (it.key() != "percent") r.push_back(cat(it.key(), ": ", it.value().get<int64_t>()));
    crow.push_back(r);
  }
  md += markdown_table({"pair", "", "", "", ""}, crow);
  md += "\n## The gate\n" + gain_markdown(report);
  {
    const json& c = report["complementarity"]["vlm_vs_head"];
    md +=
        cat("\nA gate can only gain where its inputs disagree: here the VLM is right where the "
            "head is wrong on ",
            c["only_vlm"].get<int64_t>(), " of ", m["emovlm_kd"]["n"].get<int64_t>(),
            " test images. The tiny VLM, trained from scratch, learns what a visual token holds "
            "(colours, the "
            "frame's shade) but not to compare its visual tokens, which is all it reads that the "
            "head does not; "
            "README.md (\"The demo\") gives the figures of a dataset built for that and why it "
            "does not help.\n");
  }
  md +=
      "\nThe confusion matrices, per-class F1 with intervals, the complementarity chart and the "
      "training curves: "
      "[eval/report.html](eval/report.html).\n";
  md += "\n## Predictions\n\n";
  std::vector<std::vector<std::string>> prow;
  for (const auto& p : predictions)
    prow.push_back({fs::path(p["image"].get<std::string>()).filename().string(), p["label"],
                    p["emotion"], p["vlm"]["answer"], p["head_top3"][0]["label"]});
  md += markdown_table({"image", "label", "EmoVLM-KD", "VLM", "head top-1"}, prow);
  md +=
      cat("\nTimes (s): data ", log["data"]["seconds"].get<double>(), ", stage 1 ",
          log["stage1"]["seconds"].get<double>(), ", teacher ",
          log["teacher"]["seconds"].get<double>(), ", cache ", log["extract_seconds"].get<double>(),
          ", stages 2+3 ", log["stages23_seconds"].get<double>(), ", evaluation ",
          log["evaluation_seconds"].get<double>(), ".\n");
  return md;
}

}  // namespace

json run_demo(const DemoOptions& o) {
  Timer timer, total;
  json log = json::object();
  OutputLock lock(o.out, OutputLock::Kind::Directory);
  const DemoPaths p(o.out);

  const Dataset ds = write_demo_data(o, p, log);
  log["data"]["seconds"] = timer.lap();
  const std::vector<InstructionExample> inst = write_demo_instructions(ds, p);
  write_demo_vlm(o, ds, inst, p, log);
  log["stage1"] = tune_demo_vlm(o, p);
  log["stage1"]["seconds"] = timer.lap();
  log["teacher"] = train_demo_teacher(o, p);
  log["teacher"]["seconds"] = timer.lap();
  extract_demo_caches(p);
  log["extract_seconds"] = timer.lap();
  train_demo_head_and_gate(o, p, log);
  log["stages23_seconds"] = timer.lap();

  // evaluation over the test cache, the bundle, and the bundle on the test split straight from
  // the image files (`predict --data`): the cache's figures, reached without a cache
  EvaluateOptions e;
  e.cache = p.caches.at("test");
  e.distill = p.distill;
  e.gate = p.gate;
  e.out = p.eval;
  const json report = evaluate_cache(e);
  BundleSpec b;
  b.vlm = p.vlm_tuned;
  b.distill = p.distill;
  b.gate = p.gate;
  b.dtype = ComputeDtype::f32;
  write_bundle(p.bundle, b);
  Predictor pred(p.bundle, ComputeDevice::cpu());
  const json predictions = demo_predictions(pred, ds);
  json from_images = evaluate_bundle(pred, p.data, "test", demo_dataset_options(), 1);
  from_images.erase("predictions");
  log["bundle_on_test_images"] = from_images;
  log["evaluation_seconds"] = timer.lap();

  const std::string md = demo_report_markdown(log, report, predictions, ds);
  write_file_atomic(p.out + "/REPORT.md", md);
  log["report"] = report;
  log["predictions"] = predictions;
  log["total_seconds"] = total.lap();
  log["written"] = {{"dataset", p.data},
                    {"instructions", p.instructions},
                    {"vlm", p.vlm_tuned},
                    {"teacher", p.teacher},
                    {"caches", p.out + "/cache"},
                    {"distill", p.distill},
                    {"gate", p.gate},
                    {"evaluation", p.eval},
                    {"bundle", p.bundle},
                    {"report", p.out + "/REPORT.md"}};
  write_file_atomic(p.out + "/demo.json", log.dump(1) + "\n");
  std::printf("%s\n", md.c_str());
  std::printf("Everything was written under %s:\n", p.out.c_str());
  for (auto it = log["written"].begin(); it != log["written"].end(); ++it)
    std::printf("  %-13s %s\n", it.key().c_str(), it.value().get<std::string>().c_str());
  std::printf("Predict more images with: emovlm predict --bundle %s/bundle IMAGE...\n",
              p.out.c_str());
  return log;
}

}  // namespace emovlm
