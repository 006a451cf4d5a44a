// Stage 2 (distillation head) and stage 3 (gate) training from the cache.
#include "emovlm/train/distill.h"

#include <algorithm>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/labels.h"
#include "emovlm/dist/process_group.h"
#include "emovlm/models/weights.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

// Shuffled minibatches over n cached rows: an epoch is `passes` passes over the rows, each a
// seeded permutation (the same on every machine) sliced into batches, so that batch b of an epoch
// is known without replaying the rest. A batch never spans two passes.
struct CachedBatches {
  int64_t n, batch;
  uint64_t seed;
  int64_t passes = 1;
  torch::Tensor order;  // [passes * n]: the permutations one after the other

  int64_t per_pass() const { return (n + batch - 1) / batch; }
  size_t begin(int64_t epoch) {
    if (batch <= 0) throw Error("--batch-size must be positive");
    std::vector<int64_t> o;
    o.reserve(static_cast<size_t>(passes * n));
    for (int64_t p = 0; p < passes; ++p) {
      std::vector<int64_t> perm(n);
      for (int64_t i = 0; i < n; ++i) perm[i] = i;
      SplitMix64 rng(
          mix_seed(seed, static_cast<uint64_t>(epoch), 0xD157 + static_cast<uint64_t>(p)));
      shuffle_in_place(perm, rng);
      o.insert(o.end(), perm.begin(), perm.end());
    }
    order = torch::tensor(o, torch::kInt64);
    return static_cast<size_t>(passes * per_pass());
  }
  torch::Tensor indices(size_t b) const {
    const int64_t pass = static_cast<int64_t>(b) / per_pass(),
                  within = static_cast<int64_t>(b) % per_pass();
    const int64_t start = within * batch;
    return order.narrow(0, pass * n + start, std::min(batch, n - start));
  }
};

std::string report_path(const std::string& out) {
  return (fs::path(out) / "report.json").string();
}

double accuracy(const torch::Tensor& logits, const torch::Tensor& y) {
  return (logits.argmax(-1).to(y.device()) == y).to(torch::kFloat64).mean().item<double>();
}

// A validation cache must come from the training cache's VLM, with its labels.
void check_same_parts(const FeatureCache& a, const FeatureCache& b) {
  if (a.labels != b.labels)
    throw Error(cat(b.dir, ": its labels ", json(b.labels).dump(), " differ from ", a.dir, "'s ",
                    json(a.labels).dump()));
  check_same_vlm(vlm_identity_of_cache(a.manifest), cat("the cache ", a.dir),
                 vlm_identity_of_cache(b.manifest), cat("the cache ", b.dir));
  if (a.features.size(1) != b.features.size(1))
    throw Error(cat(b.dir, ": its feature size differs from ", a.dir, "'s"));
}

}  // namespace

namespace {

// How long a run trains: at least `epochs` passes over the cache, and as many more as make
// `min_steps` optimizer steps (a small cache at a large batch gets a handful of steps a pass:
// Emotion6's ~1,600 training images, 7 at batch 256). An epoch (validation, checkpoint, early
// stopping) is one pass, or several when the budget needs more than kMaxEpochs passes, so that a
// tiny cache is not validated and checkpointed after every step. Warns (stderr) when the run is
// short anyway.
struct StepBudget {
  int64_t epochs = 0, passes = 1, steps = 0, patience = 0;
};

constexpr int64_t kMaxEpochs = 100;

StepBudget step_budget(const std::string& stage, int64_t images, int64_t batch, int64_t epochs,
                       int64_t accum, int64_t min_steps, int64_t patience, bool validated,
                       bool quiet) {
  if (batch <= 0) throw Error(cat(stage, ": --batch-size must be positive, not ", batch));
  if (epochs <= 0) throw Error(cat(stage, ": --epochs must be positive, not ", epochs));
  if (min_steps < 0) throw Error(cat(stage, ": --min-steps must be >= 0, not ", min_steps));
  if (patience < -1)
    throw Error(cat(stage, ": --patience must be >= 0 (or -1: automatic), not ", patience));
  accum = std::max<int64_t>(accum, 1);
  const int64_t per_pass = (images + batch - 1) / batch;  // batches
  const int64_t steps_per_pass = (per_pass + accum - 1) / accum;
  const int64_t passes =
      std::max(epochs, steps_per_pass > 0 ? (min_steps + steps_per_pass - 1) / steps_per_pass : 0);
  StepBudget b;
  b.passes = passes > std::max(epochs, kMaxEpochs)
                 ? (passes + std::max(epochs, kMaxEpochs) - 1) / std::max(epochs, kMaxEpochs)
                 : 1;
  b.epochs = (passes + b.passes - 1) / b.passes;
  b.steps = b.epochs * ((b.passes * per_pass + accum - 1) / accum);
  b.patience = !validated ? 0 : patience >= 0 ? patience : std::max<int64_t>(5, b.epochs / 4);
  if (b.steps < 300 && !quiet)
    std::fprintf(stderr,
                 "warning: %s: only %lld optimizer steps (%lld epochs of %lld images in batches of "
                 "%lld); the model may "
                 "be undertrained: raise --min-steps or --epochs, or lower --batch-size\n",
                 stage.c_str(), static_cast<long long>(b.steps), static_cast<long long>(b.epochs),
                 static_cast<long long>(images), static_cast<long long>(batch));
  return b;
}

// The report fields of stages 2 and 3 on how the run went against its budget.
json run_summary(const FitResult& r, const StepBudget& budget) {
  return {{"best_epoch", r.best_epoch + 1},
          {"best_val_accuracy", std::isnan(r.best_val) ? json(nullptr) : json(r.best_val)},
          {"epochs", budget.epochs},
          {"passes_per_epoch", budget.passes},
          {"epochs_run", r.epochs_run},
          {"stopped_early", r.stopped_early},
          {"optimizer_steps", r.steps},
          {"planned_optimizer_steps", budget.steps}};
}

// The weights a, b >= 0 for which softmax(a * h + b * v) fits the labels best (least
// cross-entropy): the log-linear pool of the head's logits h and the VLM's answer v, a
// two-parameter model that cannot overfit, found by L-BFGS in float64.
std::pair<double, double> pool_weights(const torch::Tensor& h, const torch::Tensor& v,
                                       const torch::Tensor& y) {
  const torch::Tensor hd = h.to(torch::kFloat64), vd = v.to(torch::kFloat64);
  torch::Tensor w = torch::ones({2}, torch::kFloat64).requires_grad_(true);
  torch::optim::LBFGS opt(
      {w}, torch::optim::LBFGSOptions(1.0).max_iter(100).line_search_fn("strong_wolfe"));
  auto closure = [&] {
    opt.zero_grad();
    torch::Tensor loss = torch::cross_entropy_loss(w[0] * hd + w[1] * vd, y);
    loss.backward();
    return loss;
  };
  opt.step(closure);
  const double a = w[0].item<double>(), b = w[1].item<double>();
  if (!std::isfinite(a) || !std::isfinite(b))
    return {1.0, 0.0};  // degenerate data: follow the head
  return {std::max(a, 0.0), std::max(b, 0.0)};
}

// The rows `idx` of a cache (for the folds of a cross-fit).
FeatureCache cache_rows(const FeatureCache& c, const torch::Tensor& idx) {
  FeatureCache s;
  s.dir = c.dir;
  s.manifest = c.manifest;
  s.labels = c.labels;
  s.features = c.features.index_select(0, idx);
  s.teacher_logits = c.teacher_logits.index_select(0, idx);
  s.vlm_scores = c.vlm_scores.index_select(0, idx);
  s.vlm_answer = c.vlm_answer.index_select(0, idx);
  s.targets = c.targets.index_select(0, idx);
  for (int64_t i :
       std::vector<int64_t>(idx.data_ptr<int64_t>(), idx.data_ptr<int64_t>() + idx.numel()))
    s.paths.push_back(c.paths.at(static_cast<size_t>(i)));
  return s;
}

struct HeadRun {
  DistillHead head{nullptr};
  json config, report;
};

// Stage 2 on loaded caches: trains, writes OUT (head.safetensors, classes.json, report.json,
// the trainer's files) and returns the head with the best validation epoch's weights.
HeadRun fit_head(const FeatureCache& train, const FeatureCache* val, const DistillOptions& o,
                 int64_t val_shared) {
  if (o.compute_dtype == ComputeDtype::f16)
    throw Error("--compute-dtype must be bf16 or f32, not f16");
  const torch::Device device = to_torch(o.device);
  DistillHeadConfig hc;
  hc.in_dim = train.features.size(1);
  hc.hidden = o.hidden;
  hc.num_classes = train.num_classes();
  hc.dropout = o.dropout;
  hc.compute_dtype = o.compute_dtype;
  torch::manual_seed(o.seed);
  DistillHead head(hc);  // drawn on the CPU, so that every device starts from the same weights
  head->to(device);
  if (!o.quiet)
    std::fprintf(stderr,
                 "distillation head: %lld parameters (input %lld, hidden %s, %lld classes)\n",
                 static_cast<long long>(count_parameters(*head)),
                 static_cast<long long>(train.features.size(1)), json(o.hidden).dump().c_str(),
                 static_cast<long long>(train.num_classes()));
  const StepBudget budget =
      step_budget("distill", train.size(), o.batch_size, o.epochs, o.optim.grad_accum, o.min_steps,
                  o.patience, val != nullptr, o.quiet);
  CachedBatches batches{train.size(), o.batch_size, o.seed, budget.passes, {}};
  // the cache's training tensors on the head's device (the same tensors on the CPU)
  const torch::Tensor features = train.features.to(device),
                      teacher_logits = train.teacher_logits.to(device),
                      targets = train.targets.to(device);
  TrainConfig tc = train_config(o.out, budget.epochs, o.seed, o.resume, o.optim, "distill");
  tc.classes = train.labels;
  tc.save_every_steps = o.save_every_steps;
  tc.patience = budget.patience;
  tc.stage_config = {{"stage", "distill"},           {"cache", o.cache},
                     {"hidden", o.hidden},           {"alpha", o.alpha},
                     {"temperature", o.temperature}, {"dropout", o.dropout},
                     {"batch_size", o.batch_size}};
  StageHooks h;
  h.begin_epoch = [&](int64_t epoch, size_t) { return batches.begin(epoch); };
  h.loss = [&](int64_t, size_t b) -> std::pair<torch::Tensor, int64_t> {
    torch::Tensor idx = dist::shard_rows(batches.indices(b));  // this process's rows of the batch
    if (idx.size(0) == 0) return {torch::Tensor(), 0};
    idx = idx.to(device);
    KDLoss l =
        kd_loss(head->forward(features.index_select(0, idx)), teacher_logits.index_select(0, idx),
                targets.index_select(0, idx), o.temperature, o.alpha);
    return {l.loss, idx.size(0)};
  };
  h.validate = [&](int64_t) {
    if (!val) return std::numeric_limits<double>::quiet_NaN();
    return accuracy(head_logits(*head, val->features), val->targets);
  };
  FitResult r = fit(*head, tc, h);
  // how it was trained, so that a cross-fit can train its fold heads alike
  const json training = {{"epochs", o.epochs},     {"min_steps", o.min_steps},
                         {"patience", o.patience}, {"batch_size", o.batch_size},
                         {"seed", o.seed},         {"optim", o.optim.to_json()}};
  json cfg = hc.to_json();  // in_dim, hidden, num_classes, dropout, compute_dtype
  cfg.update(json{{"alpha", o.alpha},
                  {"temperature", o.temperature},
                  {"labels", train.labels},
                  {"parameters", count_parameters(*head)},
                  {"vlm_identity", vlm_identity_of_cache(train.manifest)},
                  {"training", training}});
  if (dist::is_main()) {
    head->save_pretrained((fs::path(o.out) / "head.safetensors").string(), cfg);
    LabelSet ls;
    ls.name = "cache";
    ls.labels = train.labels;
    write_classes(o.out, ls);
  }
  json report = {{"stage", "distill"},
                 {"config", cfg},
                 {"train_accuracy", accuracy(head_logits(*head, train.features), train.targets)},
                 {"final_train_loss", r.last_train_loss},
                 {"cache", store_path(o.cache, report_path(o.out))}};
  report.update(run_summary(r, budget));
  if (val) report["val_images_in_training"] = val_shared;
  if (dist::is_main()) write_file_atomic(report_path(o.out), report.dump(1) + "\n");
  return {head, cfg, report};
}

// DistillOptions as a head's config records them ("training": absent in heads of older builds,
// whose defaults are then used).
DistillOptions head_options(const json& cfg, const std::string& where) {
  DistillOptions d;
  d.hidden = json_required<std::vector<int64_t>>(cfg, "hidden", where);
  d.alpha = json_optional<double>(cfg, "alpha", d.alpha, where);
  d.temperature = json_optional<double>(cfg, "temperature", d.temperature, where);
  d.dropout = json_optional<double>(cfg, "dropout", d.dropout, where);
  if (cfg.contains("compute_dtype"))
    d.compute_dtype = parse_compute_dtype(json_required<std::string>(cfg, "compute_dtype", where),
                                          where + ": compute_dtype");
  const json t = cfg.value("training", json::object());
  const std::string tw = where + " training";
  d.epochs = json_optional<int64_t>(t, "epochs", d.epochs, tw);
  d.min_steps = json_optional<int64_t>(t, "min_steps", d.min_steps, tw);
  d.patience = json_optional<int64_t>(t, "patience", d.patience, tw);
  d.batch_size = json_optional<int64_t>(t, "batch_size", d.batch_size, tw);
  d.seed = json_optional<uint64_t>(t, "seed", d.seed, tw);
  if (t.contains("optim")) d.optim = OptimConfig::from_json(t["optim"], tw + " optim");
  return d;
}

// The head's logits for every training row, each from a head that did not see it: the rows are
// split into `folds` folds (seeded, class by class so that each fold holds every class alike),
// and fold k's rows get the output of a head trained on the others with the given head's
// settings, in DIR/fold-K (resumed: a finished fold is reused).
torch::Tensor crossfit_head_logits(const FeatureCache& train, const FeatureCache* val,
                                   const json& head_cfg, const std::string& head_where,
                                   int64_t folds, uint64_t seed, const std::string& dir,
                                   bool overwrite, ComputeDevice device) {
  const int64_t n = train.size();
  if (folds < 2 || folds > n)
    throw Error(
        cat("--folds must be between 2 and the training cache's ", n, " images, not ", folds));
  // fold of each row: a seeded permutation, then rows dealt to the folds in turn, class by class
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  SplitMix64 rng(mix_seed(seed, 0xC0F1D, 0));
  shuffle_in_place(order, rng);
  const torch::Tensor y = train.targets.contiguous();
  const auto ya = y.accessor<int64_t, 1>();
  std::vector<int64_t> fold(n);
  int64_t next = 0;
  for (int64_t c = 0; c < train.num_classes(); ++c)
    for (int64_t i : order)
      if (ya[i] == c) fold[i] = next++ % folds;
  torch::Tensor logits = torch::zeros({n, train.num_classes()});
  DistillOptions d = head_options(head_cfg, head_where);
  d.cache = train.dir;
  d.quiet = true;
  d.device = device;
  for (int64_t k = 0; k < folds; ++k) {
    std::vector<int64_t> in, out;
    for (int64_t i = 0; i < n; ++i) (fold[i] == k ? out : in).push_back(i);
    if (in.empty() || out.empty())
      throw Error(cat("cross-fit: fold ", k + 1, " of ", folds, " is empty"));
    const torch::Tensor in_idx = torch::tensor(in, torch::kInt64),
                        out_idx = torch::tensor(out, torch::kInt64);
    d.out = (fs::path(dir) / cat("fold-", k + 1)).string();
    d.overwrite = overwrite;
    d.resume = !overwrite;
    d.seed = mix_seed(seed, static_cast<uint64_t>(k), 0xF01D);
    std::fprintf(stderr, "cross-fit: head %lld of %lld (%zu training images, %zu held out)\n",
                 static_cast<long long>(k + 1), static_cast<long long>(folds), in.size(),
                 out.size());
    RunOutput run(d.out, d.out, d.resume, d.overwrite);
    HeadRun h = fit_head(cache_rows(train, in_idx), val, d, 0);
    logits.index_copy_(0, out_idx, head_logits(*h.head, train.features.index_select(0, out_idx)));
  }
  return logits;
}

}  // namespace

json train_distill_head(const DistillOptions& o) {
  RunOutput run(o.out, o.out, o.resume, o.overwrite);
  FeatureCache train = FeatureCache::load(o.cache);
  std::unique_ptr<FeatureCache> val;
  int64_t val_shared = 0;  // validation images that are also training images, said before training
  if (!o.val_cache.empty()) {
    val = std::make_unique<FeatureCache>(FeatureCache::load(o.val_cache));
    check_same_parts(train, *val);
    val_shared = warn_shared_images("validation", o.val_cache, o.cache, o.quiet);
  }
  return fit_head(train, val.get(), o, val_shared).report;
}

const std::vector<std::string>& gate_fit_ons() {
  static const std::vector<std::string> v{"train", "val", "crossfit"};
  return v;
}

json train_gate(const GateOptions& o) {
  if (std::find(gate_fit_ons().begin(), gate_fit_ons().end(), o.fit_on) == gate_fit_ons().end())
    throw Error(cat("--fit-on must be train, val or crossfit, not '", o.fit_on, "'"));
  if (o.init != "average" && o.init != "random")
    throw Error(cat("--init must be average or random, not '", o.init, "'"));
  if (o.fit_on == "val" && o.val_cache.empty()) throw Error("--fit-on val needs --val-cache");
  const torch::Device device = to_torch(o.device);
  RunOutput run(o.out, o.out, o.resume, o.overwrite);
  FeatureCache train = FeatureCache::load(o.cache);
  json hcfg;
  DistillHead head = DistillHeadImpl::from_pretrained(o.distill, &hcfg);
  head->to(device);
  if (hcfg["labels"].get<std::vector<std::string>>() != train.labels)
    throw Error(cat(o.distill, ": the head was trained on other labels (", hcfg["labels"].dump(),
                    ") than ", o.cache, " holds (", json(train.labels).dump(), ")"));
  if (hcfg.contains("vlm_identity"))
    check_same_vlm(hcfg["vlm_identity"], cat("the head ", o.distill),
                   vlm_identity_of_cache(train.manifest), cat("the cache ", o.cache));
  std::unique_ptr<FeatureCache> val;
  int64_t val_shared = 0;
  if (!o.val_cache.empty()) {
    val = std::make_unique<FeatureCache>(FeatureCache::load(o.val_cache));
    check_same_parts(train, *val);
    val_shared = warn_shared_images("validation", o.val_cache, o.cache, false);
  }
  // What the gate learns from (frozen inputs, computed once): the VLM's answer vector, the head's
  // logits and the truth of each row, and the cache it validates on (none when fit on val).
  const FeatureCache& fit_cache = o.fit_on == "val" ? *val : train;
  const FeatureCache* check_cache = o.fit_on == "val" ? nullptr : val.get();
  torch::Tensor v_fit = fit_cache.vlm_input(o.vlm_input), y_fit = fit_cache.targets, h_fit;
  if (o.fit_on == "crossfit") {
    const std::string dir =
        o.crossfit_dir.empty() ? (fs::path(o.out) / "crossfit").string() : o.crossfit_dir;
    h_fit = crossfit_head_logits(train, val.get(), hcfg, o.distill, o.folds, o.seed, dir,
                                 o.overwrite && o.crossfit_dir.empty(), o.device);
  } else {
    h_fit = head_logits(*head, fit_cache.features);
  }
  torch::Tensor h_val, v_val;
  if (check_cache)
    h_val = head_logits(*head, check_cache->features), v_val = check_cache->vlm_input(o.vlm_input);
  GateConfig gc;
  gc.kind = o.kind;
  gc.num_classes = train.num_classes();
  torch::manual_seed(o.seed);
  Gate gate = make_gate(gc);  // drawn on the CPU, so that every device starts from the same weights
  // the start: the weights of the head's logits and the VLM's answer that fit the fit rows best
  const auto [head_weight, vlm_weight] = pool_weights(h_fit, v_fit, y_fit);
  if (o.init == "average") gate->init_average(head_weight, vlm_weight);
  // the gate and its frozen inputs on the device (the same tensors on the CPU)
  gate->to(device);
  const torch::Tensor v_fit_d = v_fit.to(device), h_fit_d = h_fit.to(device),
                      y_fit_d = y_fit.to(device),
                      v_val_d = v_val.defined() ? v_val.to(device) : v_val,
                      h_val_d = h_val.defined() ? h_val.to(device) : h_val;
  const double vlm_right =
      (fit_cache.vlm_answer == y_fit).to(torch::kFloat64).mean().item<double>();
  const StepBudget budget =
      step_budget("gate", fit_cache.size(), o.batch_size, o.epochs, o.optim.grad_accum, o.min_steps,
                  o.patience, check_cache != nullptr, false);
  CachedBatches batches{fit_cache.size(), o.batch_size, o.seed, budget.passes, {}};
  TrainConfig tc = train_config(o.out, budget.epochs, o.seed, o.resume, o.optim, "gate");
  tc.classes = train.labels;
  tc.save_every_steps = o.save_every_steps;
  tc.patience = budget.patience;
  tc.validate_start = true;  // the starting combination may beat every trained epoch
  tc.stage_config = {{"stage", "gate"},  {"kind", o.kind},       {"vlm_input", o.vlm_input},
                     {"cache", o.cache}, {"distill", o.distill}, {"fit_on", o.fit_on},
                     {"init", o.init}};
  StageHooks h;
  h.begin_epoch = [&](int64_t epoch, size_t) { return batches.begin(epoch); };
  h.loss = [&](int64_t, size_t b) -> std::pair<torch::Tensor, int64_t> {
    torch::Tensor idx = dist::shard_rows(batches.indices(b));  // this process's rows of the batch
    if (idx.size(0) == 0) return {torch::Tensor(), 0};
    idx = idx.to(device);
    torch::Tensor out = gate->forward(v_fit_d.index_select(0, idx), h_fit_d.index_select(0, idx));
    return {torch::cross_entropy_loss(out, y_fit_d.index_select(0, idx)), idx.size(0)};
  };
  h.validate = [&](int64_t) {
    if (!check_cache) return std::numeric_limits<double>::quiet_NaN();
    return accuracy(gate->forward(v_val_d, h_val_d), check_cache->targets);
  };
  FitResult r = fit(*gate, tc, h);
  json cfg = gc.to_json();  // kind, num_classes
  cfg.update(json{{"vlm_input", o.vlm_input},
                  {"labels", train.labels},
                  {"parameters", count_parameters(*gate)},
                  {"vlm_identity", vlm_identity_of_cache(train.manifest)},
                  {"fit_on", o.fit_on},
                  {"init", o.init}});
  if (o.fit_on == "crossfit") cfg["folds"] = o.folds;
  if (dist::is_main()) gate->save_pretrained((fs::path(o.out) / "gate.safetensors").string(), cfg);
  gate->eval();
  torch::NoGradGuard ng;
  json report = {
      {"stage", "gate"},
      {"config", cfg},
      {"fit_accuracy", accuracy(gate->forward(v_fit_d, h_fit_d), y_fit)},
      {"fit_images", fit_cache.size()},
      {"vlm_fit_accuracy", vlm_right},
      {"head_fit_accuracy", accuracy(h_fit, y_fit)},
      {"init", {{"kind", o.init}, {"head_weight", head_weight}, {"vlm_weight", vlm_weight}}},
      {"cache", store_path(o.cache, report_path(o.out))}};
  report.update(run_summary(r, budget));
  if (check_cache)
    report["val"] = {{"vlm_accuracy", (check_cache->vlm_answer == check_cache->targets)
                                          .to(torch::kFloat64)
                                          .mean()
                                          .item<double>()},
                     {"head_accuracy", accuracy(h_val, check_cache->targets)}};
  if (val) report["val_images_in_training"] = val_shared;
  if (dist::is_main()) write_file_atomic(report_path(o.out), report.dump(1) + "\n");
  return report;
}

}  // namespace emovlm
