// The pipeline's stages on the command line: teacher train/eval, extract, distill, gate,
// evaluate, bundle, predict.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/data/check.h"
#include "emovlm/data/convert.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/pipeline/ablation.h"
#include "emovlm/pipeline/evaluate.h"
#include "emovlm/pipeline/extract.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/train/distill.h"
#include "emovlm/train/teacher.h"

namespace emovlm::cli {

namespace {

void add_optim_flags(CLI::App* c, OptimConfig& o) {
  c->add_option("--lr", o.lr, "learning rate")->capture_default_str();
  c->add_option("--weight-decay", o.weight_decay, "")->capture_default_str();
  c->add_option("--optimizer", o.optimizer, "adam or adamw")->capture_default_str();
  c->add_option("--schedule", o.schedule, "constant, warmup, linear or cosine")
      ->capture_default_str();
  c->add_option("--warmup-ratio", o.warmup_ratio, "share of steps for linear warm-up")
      ->capture_default_str();
  c->add_option("--max-grad-norm", o.max_grad_norm, "gradient clipping (0: off)")
      ->capture_default_str();
  c->add_option("--grad-accum", o.grad_accum, "batches per optimizer step")->capture_default_str();
}

// The step budget and early stopping of stages 2 and 3 (DistillOptions, GateOptions).
void add_budget_flags(CLI::App* c, int64_t& epochs, int64_t& min_steps, int64_t& patience) {
  c->add_option("--epochs", epochs, "passes over the training data (at least; see --min-steps)")
      ->capture_default_str();
  c->add_option("--min-steps", min_steps,
                "train at least this many optimizer steps (more epochs on a small cache; 0: "
                "exactly --epochs)")
      ->capture_default_str();
  c->add_option("--patience", patience,
                "with --val-cache: stop after this many epochs without a better validation "
                "accuracy (-1: a quarter "
                "of the epochs, at least 5; 0: never)")
      ->capture_default_str();
}

void add_dataset_flags(CLI::App* c, DatasetOptions& d) {
  c->add_option("--labels", d.labels,
                "mikels8, ekman6, binary or a,b,c (default: the folder names)");
  c->add_option("--val-fraction", d.val_fraction,
                "validation share of train/ when there is no val/")
      ->capture_default_str();
  c->add_option("--split-seed", d.split_seed, "seed of that split")->capture_default_str();
}

std::vector<int64_t> parse_hidden(const std::string& s) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t c = s.find(',', pos);
    out.push_back(std::stoll(s.substr(pos, c == std::string::npos ? std::string::npos : c - pos)));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  if (out.empty()) throw Error("--hidden needs at least one size (e.g. 1024 or 1024,512)");
  return out;
}

}  // namespace

void add_pipeline_commands(CLI::App& app) {
  // ---- data convert
  CLI::App* data = app.add_subcommand("data", "Dataset tools");
  data->require_subcommand(1);
  auto cv = std::make_shared<ConvertOptions>();
  CLI::App* conv = data->add_subcommand(
      "convert",
      "Native EmoSet / Emotion6 / vote-count files or image folders -> a JSONL manifest");
  conv->add_option(
          "--format", cv->format,
          "emoset, emotion6, votes (Flickr, Instagram) or folders (ROOT/<emotion>/, as FI)")
      ->required();
  conv->add_option("--src", cv->src, "the dataset root (votes: the vote-count file)")->required();
  conv->add_option("--test-fraction", cv->test_fraction,
                   "share of the images without a split written as test (e.g. 0.15)")
      ->capture_default_str();
  conv->add_option("--val-fraction", cv->val_fraction, "share of them written as val (e.g. 0.05)")
      ->capture_default_str();
  conv->add_option("--split-seed", cv->split_seed, "seed of those splits")->capture_default_str();
  conv->add_option("--images", cv->images,
                   "where the images are (default: the format's place under --src)");
  conv->add_option("--out", cv->out, "the manifest to write (.jsonl)")->required();
  conv->callback([cv] { std::cout << convert_dataset(*cv).dump(1) << std::endl; });
  auto ck = std::make_shared<CheckOptions>();
  CLI::App* chk = data->add_subcommand(
      "check", "Counts, duplicate images (across splits, under two labels), unreadable files");
  chk->add_option("--data", ck->data, "dataset root or manifest")->required();
  add_dataset_flags(chk, ck->dataset);
  chk->add_flag("--decode", ck->decode,
                "decode every image too (finds truncated and corrupt files; slower)");
  chk->add_option("--out", ck->out, "write the full report here (.json)");
  chk->callback([ck] {
    json r = check_dataset(*ck);
    std::cout << r["summary"].dump(1) << std::endl;
    std::printf(
        "duplicate groups: %lld (%lld extra copies), across splits: %lld, under different labels: "
        "%lld\n",
        static_cast<long long>(r["duplicate_groups"].get<int64_t>()),
        static_cast<long long>(r["duplicate_extra_copies"].get<int64_t>()),
        static_cast<long long>(r["cross_split_duplicates"].get<int64_t>()),
        static_cast<long long>(r["conflicting_labels"].get<int64_t>()));
    std::printf("unreadable: %zu\n", r["unreadable"].size());
    for (const auto& u : r["unreadable"])
      std::printf("  %s\n", u["error"].get<std::string>().c_str());
    if (r.contains("sizes") && !r["sizes"]["width"].empty())
      std::printf("sizes: width %d..%d (median %d), height %d..%d (median %d)\n",
                  r["sizes"]["width"]["min"].get<int>(), r["sizes"]["width"]["max"].get<int>(),
                  r["sizes"]["width"]["median"].get<int>(), r["sizes"]["height"]["min"].get<int>(),
                  r["sizes"]["height"]["max"].get<int>(),
                  r["sizes"]["height"]["median"].get<int>());
    if (!ck->out.empty()) std::printf("report: %s\n", ck->out.c_str());
  });

  // ---- teacher
  CLI::App* teacher =
      app.add_subcommand("teacher", "Train or evaluate the teacher (ViT, ResNet or VGG)");
  teacher->require_subcommand(1);
  auto t = std::make_shared<TeacherOptions>();
  CLI::App* tt = teacher->add_subcommand(
      "train", "Fine-tune an ImageNet checkpoint (ViT, ResNet, VGG) on an emotion dataset");
  tt->add_option("--data", t->data, "ROOT/{train,val,test}/<emotion>/ or a manifest")->required();
  tt->add_option(
        "--init", t->init,
        "a checkpoint directory: a Hugging Face ViT (google/vit-base-patch16-384) or timm's "
        "resnet50.tv_in1k, vgg16.tv_in1k, vgg16_bn.tv_in1k")
      ->required();
  tt->add_option("--arch", t->arch,
                 "vit, resnet50, vgg16 or vgg16_bn (also resnet101/152, vgg11/13/19[_bn]); "
                 "default: what --init holds (checked when given)");
  tt->add_option("--preprocess", t->preprocess,
                 "reference (the reference script's: Resize + CenterCrop 384, mean = std = 0.5) or "
                 "checkpoint "
                 "(timm's pretrained_cfg for ResNet/VGG)")
      ->capture_default_str();
  tt->add_option("--out", t->out, "output directory")->required();
  add_dataset_flags(tt, t->dataset);
  tt->add_option("--epochs", t->epochs, "")->capture_default_str();
  tt->add_option("--batch-size", t->batch_size, "")->capture_default_str();
  tt->add_option("--image-size", t->image_size, "input size (default: the transform's)");
  tt->add_option("--device", t->device, "cpu, cuda[:N] or auto")->capture_default_str();
  tt->add_option("--autocast", t->autocast, "none or bf16 (mixed precision over float32 weights)")
      ->capture_default_str();
  tt->add_option("--workers", t->workers, "data-loader threads")->capture_default_str();
  tt->add_option("--seed", t->seed, "")->capture_default_str();
  tt->add_flag("--resume", t->resume, "continue the run in --out");
  tt->add_flag("--overwrite", t->overwrite, "start over in an --out that holds a run");
  tt->add_option("--save-every", t->save_every_steps,
                 "also checkpoint every N optimizer steps (0: each epoch)")
      ->capture_default_str();
  add_optim_flags(tt, t->optim);
  tt->callback([t] { std::cout << train_teacher(*t).dump(1) << std::endl; });

  struct TeacherEval {
    std::string dir, data, split = "test";
    DatasetOptions dataset;
    int64_t batch = 32;
    int workers = 2;
    std::string device = "auto";
    bool as_json = false;
  };
  auto te = std::make_shared<TeacherEval>();
  CLI::App* tev = teacher->add_subcommand("eval", "Accuracy of a trained teacher on a split");
  tev->add_option("--teacher", te->dir, "a directory written by `teacher train`")->required();
  tev->add_option("--data", te->data, "the dataset")->required();
  tev->add_option("--split", te->split, "train, val or test")->capture_default_str();
  add_dataset_flags(tev, te->dataset);
  tev->add_option("--batch-size", te->batch, "")->capture_default_str();
  tev->add_option("--workers", te->workers, "")->capture_default_str();
  tev->add_option("--device", te->device, "cpu, cuda[:N] or auto")->capture_default_str();
  tev->add_flag("--json", te->as_json, "print the whole report (per class, confusion) as JSON");
  tev->callback([te] {
    json r =
        eval_teacher(te->dir, te->data, te->split, te->dataset, te->batch, te->workers, te->device);
    if (te->as_json) {
      std::cout << r.dump(1) << std::endl;
      return;
    }
    // a row of Table 1, in evaluate's layout
    std::cout << models_table_markdown({{classifier_display_name(r["arch"]), r}});
    if (!r["skipped_images"].empty())
      std::printf("%zu unreadable images skipped\n", r["skipped_images"].size());
  });

  // ---- extract
  auto x = std::make_shared<ExtractOptions>();
  CLI::App* ex =
      app.add_subcommand("extract", "Cache the frozen models' outputs for a split (resumable)");
  ex->add_option("--vlm", x->vlm, "Qwen2-VL checkpoint directory")->required();
  ex->add_option("--adapter", x->adapter, "LoRA adapter directory");
  ex->add_option("--teacher", x->teacher, "trained teacher directory (ViT, ResNet or VGG)")
      ->required();
  ex->add_option("--data", x->data, "the dataset")->required();
  ex->add_option("--split", x->split, "train, val or test")->capture_default_str();
  ex->add_option("--out", x->out, "cache directory")->required();
  add_dataset_flags(ex, x->dataset);
  ex->add_option("--vlm-mode", x->vlm_mode,
                 "score (label scores) or generate (the reference's sampling)")
      ->capture_default_str();
  ex->add_option("--dtype", x->dtype, "bf16, f16 or f32")->capture_default_str();
  ex->add_option("--device", x->device, "cpu, cuda or auto")->capture_default_str();
  ex->add_option("--shard-size", x->shard_size, "images per shard (the resume granularity)")
      ->capture_default_str();
  ex->add_option("--vlm-batch", x->vlm_batch,
                 "images per VLM forward (1: each alone, deterministic; 16 or more fills a GPU)")
      ->capture_default_str();
  ex->add_option("--teacher-batch", x->teacher_batch, "images per teacher forward")
      ->capture_default_str();
  ex->add_option("--teacher-dtype", x->teacher_dtype,
                 "f32 (exact) or bf16 (autocast; a GPU's throughput)")
      ->capture_default_str();
  ex->add_option("--workers", x->workers, "decoding threads")->capture_default_str();
  ex->add_option("--temperature", x->temperature, "generate mode")->capture_default_str();
  ex->add_option("--max-new-tokens", x->max_new_tokens, "generate mode")->capture_default_str();
  ex->add_option("--seed", x->seed, "generate mode")->capture_default_str();
  ex->add_flag("--cuda-graph", x->cuda_graph,
               "generate mode: decode with fixed shapes, one CUDA graph per token on a GPU");
  ex->callback([x] {
    json m = extract_features(*x);
    int64_t cached = 0, failed = 0;
    for (const auto& s : m["shards"])
      cached += s["cached"].get<int64_t>(), failed += static_cast<int64_t>(s["failures"].size());
    std::printf("%s: %lld images cached, %lld unreadable (listed in manifest.json)\n",
                x->out.c_str(), static_cast<long long>(cached), static_cast<long long>(failed));
  });

  // ---- distill
  auto d = std::make_shared<DistillOptions>();
  auto hidden = std::make_shared<std::string>("1024");
  CLI::App* di = app.add_subcommand("distill", "Stage 2: train the distillation head from a cache");
  di->add_option("--cache", d->cache, "training cache")->required();
  di->add_option("--val-cache", d->val_cache, "validation cache (best epoch selection)");
  di->add_option("--out", d->out, "output directory")->required();
  di->add_option("--hidden", *hidden, "hidden sizes, e.g. 1024 or 1024,512")->capture_default_str();
  di->add_option("--alpha", d->alpha, "weight of the KL term")->capture_default_str();
  di->add_option("--temperature", d->temperature, "distillation temperature")
      ->capture_default_str();
  di->add_option("--dropout", d->dropout, "")->capture_default_str();
  add_budget_flags(di, d->epochs, d->min_steps, d->patience);
  di->add_option("--batch-size", d->batch_size, "(the reference code uses 1)")
      ->capture_default_str();
  di->add_option("--compute-dtype", d->compute_dtype,
                 "bf16 or f32 matmuls (the weights stay float32)")
      ->capture_default_str();
  di->add_option("--seed", d->seed, "")->capture_default_str();
  di->add_flag("--resume", d->resume, "continue the run in --out");
  di->add_flag("--overwrite", d->overwrite, "start over in an --out that holds a run");
  di->add_option("--save-every", d->save_every_steps, "also checkpoint every N optimizer steps")
      ->capture_default_str();
  add_optim_flags(di, d->optim);
  di->callback([d, hidden] {
    d->hidden = parse_hidden(*hidden);
    std::cout << train_distill_head(*d).dump(1) << std::endl;
  });

  // ---- gate
  auto g = std::make_shared<GateOptions>();
  CLI::App* ga =
      app.add_subcommand("gate", "Stage 3: train the gate from a cache and a distillation head");
  ga->add_option("--cache", g->cache, "training cache")->required();
  ga->add_option("--val-cache", g->val_cache, "validation cache");
  ga->add_option("--distill", g->distill, "the distillation head's directory")->required();
  ga->add_option("--gate", g->kind, "concat, moe, bilinear, dynamic or cross")
      ->capture_default_str();
  ga->add_option("--vlm-input", g->vlm_input, "onehot (the paper) or scores")
      ->capture_default_str();
  ga->add_option("--fit-on", g->fit_on,
                 "what the gate learns from: train (the paper: the training cache, which the head "
                 "and the VLM have "
                 "seen), val (the validation cache) or crossfit (the training cache with "
                 "out-of-fold head outputs)")
      ->capture_default_str();
  ga->add_option("--folds", g->folds, "crossfit: heads trained, each on all folds but one")
      ->capture_default_str();
  ga->add_option("--init", g->init,
                 "average (start as a weighted average of the inputs' log-probabilities, weights "
                 "fit on the fit "
                 "data) or random (PyTorch's default, as the reference)")
      ->capture_default_str();
  ga->add_option("--out", g->out, "output directory")->required();
  add_budget_flags(ga, g->epochs, g->min_steps, g->patience);
  ga->add_option("--batch-size", g->batch_size, "")->capture_default_str();
  ga->add_option("--seed", g->seed, "")->capture_default_str();
  ga->add_flag("--resume", g->resume, "continue the run in --out");
  ga->add_flag("--overwrite", g->overwrite, "start over in an --out that holds a run");
  ga->add_option("--save-every", g->save_every_steps, "also checkpoint every N optimizer steps")
      ->capture_default_str();
  add_optim_flags(ga, g->optim);
  ga->callback([g] { std::cout << train_gate(*g).dump(1) << std::endl; });

  // ---- evaluate
  auto e = std::make_shared<EvaluateOptions>();
  CLI::App* ev = app.add_subcommand(
      "evaluate", "Accuracy, macro-F1, confusion and complementarity on a test cache");
  ev->add_option("--cache", e->cache, "test cache")->required();
  ev->add_option("--distill", e->distill, "distillation head directory")->required();
  ev->add_option("--gate", e->gate, "gate directory");
  ev->add_option("--out", e->out, "write report.json and report.md here");
  ev->add_option("--bootstrap", e->bootstrap, "resamples for the 95% intervals (0: none)")
      ->capture_default_str();
  ev->add_option("--seed", e->seed, "of the bootstrap's resampling")->capture_default_str();
  ev->callback([e] { std::cout << evaluation_markdown(evaluate_cache(*e)); });

  // ---- ablations
  auto ab = std::make_shared<AblationOptions>();
  CLI::App* abl = app.add_subcommand(
      "ablate",
      "Sweep the head depth, alpha, the gate or what it is fit on, from one set of caches");
  abl->add_option("kind", ab->kind, "depth, alpha, gate or gate-data")->required();
  abl->add_option("--cache", ab->train_cache, "training cache")->required();
  abl->add_option("--val-cache", ab->val_cache, "validation cache");
  abl->add_option("--test-cache", ab->test_cache, "test cache")->required();
  abl->add_option("--out", ab->out, "output directory")->required();
  abl->add_option("--values", ab->values,
                  "settings to try, space-separated (default: the paper's sweep; gate-data: train "
                  "val crossfit)");
  abl->add_option("--distill-epochs", ab->distill.epochs, "the head's --epochs")
      ->capture_default_str();
  abl->add_option("--gate-epochs", ab->gate.epochs, "the gate's --epochs")->capture_default_str();
  abl->add_option("--distill-batch-size", ab->distill.batch_size, "the head's --batch-size")
      ->capture_default_str();
  abl->add_option("--gate-batch-size", ab->gate.batch_size, "the gate's --batch-size")
      ->capture_default_str();
  abl->add_option_function<int64_t>(
      "--batch-size", [ab](int64_t b) { ab->distill.batch_size = ab->gate.batch_size = b; },
      "both --distill-batch-size and --gate-batch-size");
  abl->add_option_function<int64_t>(
      "--min-steps", [ab](int64_t n) { ab->distill.min_steps = ab->gate.min_steps = n; },
      cat("the head's and the gate's --min-steps (default ", ab->distill.min_steps, ")"));
  abl->add_option("--gate", ab->gate.kind, "the gate of the depth and alpha sweeps")
      ->capture_default_str();
  abl->add_option("--fit-on", ab->gate.fit_on,
                  "the gate's --fit-on in the depth, alpha and gate sweeps")
      ->capture_default_str();
  abl->add_option_function<uint64_t>(
      "--seed", [ab](uint64_t s) { ab->distill.seed = ab->gate.seed = s; },
      "the head's and the gate's --seed (default 0)");
  abl->callback([ab] { std::cout << run_ablation(*ab)["markdown"].get<std::string>(); });

  // ---- bundle, predict
  auto b = std::make_shared<BundleSpec>();
  auto bout = std::make_shared<std::string>();
  CLI::App* bu = app.add_subcommand("bundle", "Gather what prediction needs into one directory");
  bu->add_option("--vlm", b->vlm, "Qwen2-VL checkpoint directory")->required();
  bu->add_option("--adapter", b->adapter, "LoRA adapter");
  bu->add_option("--distill", b->distill, "distillation head directory")->required();
  bu->add_option("--gate", b->gate, "gate directory")->required();
  bu->add_option("--dtype", b->dtype, "bf16, f16 or f32")->capture_default_str();
  bu->add_option("--out", *bout, "bundle directory")->required();
  bu->callback([b, bout] {
    write_bundle(*bout, *b);
    std::printf("wrote %s/bundle.json\n", bout->c_str());
  });

  struct PredictArgs {
    std::string bundle, device = "auto";
    std::vector<std::string> images;
    SplitArgs split;  // --data: the bundle evaluated on a labelled split
    bool as_json = false;
    int batch = 1;
  };
  auto p = std::make_shared<PredictArgs>();
  CLI::App* pr = app.add_subcommand(
      "predict", "The emotion of each image, with how the VLM, the head and the gate saw it");
  pr->add_option("--bundle", p->bundle, "a directory written by `emovlm bundle`")->required();
  pr->add_option("images", p->images,
                 "image files (JPEG, PNG, GIF, BMP, WebP) or directories of them");
  add_split_flags(pr, p->split,
                  "accuracy and macro-F1 of the VLM, the head and EmoVLM-KD, from the images (no "
                  "cache needed)");
  pr->add_option("--device", p->device, "cpu, cuda or auto")->capture_default_str();
  pr->add_flag("--json", p->as_json, "print JSON");
  pr->add_option(
        "--batch", p->batch,
        "images per VLM forward (1: each alone, independent of the others; more: faster on a GPU, "
        "equal to float rounding)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  pr->callback([p] {
    const bool on_split = p->split.chosen(p->images, "predict");
    Predictor pred(p->bundle, p->device);
    if (on_split) {
      run_split_report(p->split, p->as_json,
                       [&](const auto& on_result, const std::string& journal) {
                         return evaluate_bundle(pred, p->split.data, p->split.split,
                                                p->split.dataset, p->batch, on_result, journal);
                       },
                       {{"VLM", "/models/vlm"},
                        {"head", "/models/distill_head"},
                        {"EmoVLM-KD", "/models/emovlm_kd"}});
      return;
    }
    json all = json::array();
    size_t failed = 0;
    auto listing = [](const std::vector<std::pair<double, std::string>>& v) {
      std::string s;
      char prob[32];
      for (const auto& [pr, label] : v) {
        std::snprintf(prob, sizeof prob, "%.3f", pr);
        s += cat(s.empty() ? "" : ", ", label, " ", prob);
      }
      return s;
    };
    auto show = [&](const json& r) {
      if (r.contains("error")) {  // an unreadable image: said, and the others still predicted
        ++failed;
        report_image_error(r["image"], r["error"], p->as_json, all);
        return;
      }
      if (p->as_json) {
        all.push_back(r);
        return;
      }
      std::printf("%s: %s (%.3f)\n", r["image"].get<std::string>().c_str(),
                  r["emotion"].get<std::string>().c_str(), r["confidence"].get<double>());
      std::vector<std::pair<double, std::string>> vlm, head;
      for (const auto& [label, pr] : r["vlm"]["probabilities"].items())
        vlm.emplace_back(pr.get<double>(), label);
      std::stable_sort(vlm.begin(), vlm.end(),
                       [](const auto& a, const auto& b) { return a.first > b.first; });
      vlm.resize(std::min<size_t>(vlm.size(), 3));
      for (const auto& h : r["head_top3"])
        head.emplace_back(h["probability"].get<double>(), h["label"].get<std::string>());
      std::printf("  VLM answer: %s (label scores: %s)\n",
                  r["vlm"]["answer"].get<std::string>().c_str(), listing(vlm).c_str());
      std::printf("  head top-3: %s\n", listing(head).c_str());
      if (r["gate"].contains("influence")) {
        // how much each input moved the answer: its probability minus that with the input made
        // neutral
        const json& in = r["gate"]["influence"];
        auto part = [&](const char* name, const char* key, const json& alt) {
          char buf[160];
          std::snprintf(buf, sizeof buf, "%s %+.3f (without it: %s %.3f)", name,
                        in[key].get<double>(), alt["emotion"].get<std::string>().c_str(),
                        alt["emotion_probability"].get<double>());
          return std::string(buf);
        };
        std::printf("  moved by: %s, %s\n", part("VLM", "vlm", in["without_vlm"]).c_str(),
                    part("head", "head", in["without_head"]).c_str());
      }
      if (r["gate"].contains("weights"))
        std::printf("  gate (%s) weighed VLM %.2f, head %.2f\n",
                    r["gate"]["kind"].get<std::string>().c_str(),
                    r["gate"]["weights"]["vlm"].get<double>(),
                    r["gate"]["weights"]["head"].get<double>());
      std::fflush(stdout);
    };
    const std::vector<std::string> images = image_arguments(p->images);
    pred.predict_stream(images, p->batch, show);  // printed as each batch comes
    if (p->as_json) std::cout << all.dump(1) << std::endl;
    if (failed)
      throw Error(cat(failed, " of ", images.size(), " images could not be predicted (see above)"));
  });
}

}  // namespace emovlm::cli
