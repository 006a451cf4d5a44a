// Stage 2 (distillation head) and stage 3 (gate) training from the cache.
#include "emovlm/train/distill.h"

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/dataset.h"
#include "emovlm/train/teacher.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

// Shuffled minibatches over n cached rows: a seeded permutation per epoch (the same on every
// machine), sliced into batches, so that batch b of an epoch is known without replaying the rest.
struct CachedBatches {
  int64_t n, batch;
  uint64_t seed;
  torch::Tensor order;

  size_t begin(int64_t epoch) {
    if (batch <= 0) throw Error("--batch-size must be positive");
    std::vector<int64_t> o(n);
    for (int64_t i = 0; i < n; ++i) o[i] = i;
    SplitMix64 rng(mix_seed(seed, static_cast<uint64_t>(epoch), 0xD157));
    for (int64_t i = n; i > 1; --i) std::swap(o[i - 1], o[rng.below(static_cast<uint64_t>(i))]);
    order = torch::tensor(o, torch::kInt64);
    return static_cast<size_t>((n + batch - 1) / batch);
  }
  torch::Tensor indices(size_t b) const {
    const int64_t start = static_cast<int64_t>(b) * batch;
    return order.narrow(0, start, std::min(batch, n - start));
  }
};

void save_module(const std::string& path, torch::nn::Module& m, const std::string& key, const json& config) {
  NamedTensors ts;
  for (const auto& p : m.named_parameters()) ts.emplace_back(p.key(), p.value());
  save_tensors(path, ts, {{key, config.dump()}});
}

json module_config(const std::string& path, const std::string& key) {
  Checkpoint ck(path);
  auto m = ck.metadata();
  auto it = m.find(key);
  if (it == m.end()) throw Error(cat(path, ": no '", key, "' metadata; not written by emovlm"));
  try {
    json c = json::parse(it->second);
    if (!c.is_object()) throw Error("not a JSON object");
    return c;
  } catch (const std::exception& e) {
    throw Error(cat(path, ": metadata ", key, " is not valid: ", e.what()));
  }
}

void load_module(const std::string& path, torch::nn::Module& m) {
  Checkpoint ck(path);
  torch::NoGradGuard ng;
  for (auto& p : m.named_parameters()) {
    torch::Tensor t = load_tensor(ck, p.key());
    if (t.sizes() != p.value().sizes())
      throw Error(cat(path, ": ", p.key(), " has shape ", shape_str(t.sizes().vec()), ", expected ",
                      shape_str(p.value().sizes().vec())));
    p.value().copy_(t);
  }
}

std::string report_path(const std::string& out) { return (fs::path(out) / "report.json").string(); }

double accuracy(const torch::Tensor& logits, const torch::Tensor& y) {
  return (logits.argmax(-1) == y).to(torch::kFloat64).mean().item<double>();
}

// A validation cache must come from the training cache's VLM, with its labels.
void check_same_parts(const FeatureCache& a, const FeatureCache& b) {
  if (a.labels != b.labels)
    throw Error(cat(b.dir, ": its labels ", json(b.labels).dump(), " differ from ", a.dir, "'s ", json(a.labels).dump()));
  check_same_vlm(vlm_identity_of_cache(a.manifest), cat("the cache ", a.dir), vlm_identity_of_cache(b.manifest),
                 cat("the cache ", b.dir));
  if (a.features.size(1) != b.features.size(1)) throw Error(cat(b.dir, ": its feature size differs from ", a.dir, "'s"));
}

}  // namespace

torch::Tensor head_logits(DistillHeadImpl& head, const torch::Tensor& features) {
  torch::NoGradGuard ng;
  head.eval();
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < features.size(0); i += 4096) out.push_back(head.forward(features.narrow(0, i, std::min<int64_t>(4096, features.size(0) - i))));
  return torch::cat(out);
}

namespace {

// Optimizer steps a run takes; warns (stderr) when they are few: with the batch defaults a small
// dataset gets a handful per epoch (Emotion6's ~1,600 training images: 7 at batch 256).
int64_t optimizer_steps(const std::string& stage, int64_t images, int64_t batch, int64_t epochs, int64_t accum,
                        bool quiet) {
  const int64_t per_epoch = batch > 0 ? (images + batch - 1) / batch : 0;
  const int64_t steps = epochs * ((per_epoch + std::max<int64_t>(accum, 1) - 1) / std::max<int64_t>(accum, 1));
  if (steps < 300 && !quiet)
    std::fprintf(stderr,
                 "warning: %s: only %lld optimizer steps (%lld epochs of %lld images in batches of %lld); the model may "
                 "be undertrained: raise --epochs or lower --batch-size\n",
                 stage.c_str(), static_cast<long long>(steps), static_cast<long long>(epochs),
                 static_cast<long long>(images), static_cast<long long>(batch));
  return steps;
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
  torch::manual_seed(o.seed);
  DistillHead head(train.features.size(1), o.hidden, train.num_classes(), o.dropout);
  if (o.compute_dtype != "bf16" && o.compute_dtype != "f32")
    throw Error(cat("--compute-dtype must be bf16 or f32, not '", o.compute_dtype, "'"));
  head->set_compute_dtype(parse_dtype(o.compute_dtype, "--compute-dtype"));
  if (!o.quiet)
    std::fprintf(stderr, "distillation head: %lld parameters (input %lld, hidden %s, %lld classes)\n",
                 static_cast<long long>(head->num_parameters()), static_cast<long long>(train.features.size(1)),
                 json(o.hidden).dump().c_str(), static_cast<long long>(train.num_classes()));
  CachedBatches batches{train.size(), o.batch_size, o.seed, {}};
  const int64_t steps = optimizer_steps("distill", train.size(), o.batch_size, o.epochs, o.optim.grad_accum, o.quiet);
  TrainConfig tc = train_config(o.out, o.epochs, o.seed, o.resume, o.optim, "distill");
  tc.classes = train.labels;
  tc.save_every_steps = o.save_every_steps;
  tc.stage_config = {{"stage", "distill"}, {"cache", o.cache}, {"hidden", o.hidden}, {"alpha", o.alpha},
                     {"temperature", o.temperature}, {"dropout", o.dropout}, {"batch_size", o.batch_size}};
  StageHooks h;
  h.begin_epoch = [&](int64_t epoch, size_t) { return batches.begin(epoch); };
  h.loss = [&](int64_t, size_t b) -> std::pair<torch::Tensor, int64_t> {
    torch::Tensor idx = batches.indices(b);
    KDLoss l = kd_loss(head->forward(train.features.index_select(0, idx)), train.teacher_logits.index_select(0, idx),
                       train.targets.index_select(0, idx), o.temperature, o.alpha);
    return {l.loss, idx.size(0)};
  };
  h.validate = [&](int64_t) {
    if (!val) return std::numeric_limits<double>::quiet_NaN();
    return accuracy(head_logits(*head, val->features), val->targets);
  };
  FitResult r = fit(*head, tc, h);
  load_trained_weights(*head, r.best_path);
  json cfg = {{"in_dim", train.features.size(1)}, {"hidden", o.hidden}, {"num_classes", train.num_classes()},
              {"dropout", o.dropout}, {"alpha", o.alpha}, {"temperature", o.temperature}, {"labels", train.labels},
              {"compute_dtype", o.compute_dtype},
              {"parameters", head->num_parameters()}, {"vlm_identity", vlm_identity_of_cache(train.manifest)}};
  save_module((fs::path(o.out) / "head.safetensors").string(), *head, "emovlm.head", cfg);
  LabelSet ls;
  ls.name = "cache";
  ls.labels = train.labels;
  write_classes(o.out, ls);
  json report = {{"stage", "distill"}, {"config", cfg}, {"best_epoch", r.best_epoch + 1},
                 {"best_val_accuracy", std::isnan(r.best_val) ? json(nullptr) : json(r.best_val)},
                 {"train_accuracy", accuracy(head_logits(*head, train.features), train.targets)},
                 {"final_train_loss", r.last_train_loss}, {"cache", store_path(o.cache, report_path(o.out))},
                 {"optimizer_steps", steps}};
  if (val) report["val_images_in_training"] = val_shared;
  write_file_atomic(report_path(o.out), report.dump(1) + "\n");
  return report;
}

DistillHead load_distill_head(const std::string& dir, json* config) {
  const std::string p = fs::is_directory(dir) ? (fs::path(dir) / "head.safetensors").string() : dir;
  json c = module_config(p, "emovlm.head");
  const std::string where = p + ": metadata emovlm.head";
  const int64_t in_dim = json_required<int64_t>(c, "in_dim", where);
  const auto hidden = json_required<std::vector<int64_t>>(c, "hidden", where);
  const int64_t classes = json_required<int64_t>(c, "num_classes", where);
  const double dropout = json_optional<double>(c, "dropout", 0.1, where);
  try {
    constexpr int64_t kMaxWidth = int64_t{1} << 20;
    check_range(in_dim, 1, kMaxWidth, "in_dim");
    check_range(static_cast<int64_t>(hidden.size()), 0, 64, "the number of hidden layers");
    for (size_t i = 0; i < hidden.size(); ++i) check_range(hidden[i], 1, kMaxWidth, cat("hidden[", i, "]"));
    check_range(classes, 1, kMaxWidth, "num_classes");
    check(dropout >= 0 && dropout < 1, cat("dropout ", dropout, " must be in [0, 1)"));
  } catch (const Error& e) {
    throw Error(cat(where, ": ", e.what()));
  }
  DistillHead head(in_dim, hidden, classes, dropout);
  load_module(p, *head);
  head->set_compute_dtype(parse_dtype(c.value("compute_dtype", "f32"), "compute_dtype"));
  head->eval();
  if (config) *config = c;
  return head;
}

json train_gate(const GateOptions& o) {
  RunOutput run(o.out, o.out, o.resume, o.overwrite);
  FeatureCache train = FeatureCache::load(o.cache);
  json hcfg;
  DistillHead head = load_distill_head(o.distill, &hcfg);
  if (hcfg["labels"].get<std::vector<std::string>>() != train.labels)
    throw Error(cat(o.distill, ": the head was trained on other labels (", hcfg["labels"].dump(), ") than ", o.cache,
                    " holds (", json(train.labels).dump(), ")"));
  if (hcfg.contains("vlm_identity"))
    check_same_vlm(hcfg["vlm_identity"], cat("the head ", o.distill), vlm_identity_of_cache(train.manifest),
                   cat("the cache ", o.cache));
  std::unique_ptr<FeatureCache> val;
  int64_t val_shared = 0;
  if (!o.val_cache.empty()) {
    val = std::make_unique<FeatureCache>(FeatureCache::load(o.val_cache));
    check_same_parts(train, *val);
    val_shared = warn_shared_images("validation", o.val_cache, o.cache, false);
  }
  // Frozen inputs, computed once: the head's logits and the VLM's answer vector.
  torch::Tensor h_train = head_logits(*head, train.features), v_train = train.vlm_input(o.vlm_input);
  torch::Tensor h_val, v_val;
  if (val) h_val = head_logits(*head, val->features), v_val = val->vlm_input(o.vlm_input);
  torch::manual_seed(o.seed);
  Gate gate(o.kind, train.num_classes());
  CachedBatches batches{train.size(), o.batch_size, o.seed, {}};
  const int64_t steps = optimizer_steps("gate", train.size(), o.batch_size, o.epochs, o.optim.grad_accum, false);
  TrainConfig tc = train_config(o.out, o.epochs, o.seed, o.resume, o.optim, "gate");
  tc.classes = train.labels;
  tc.save_every_steps = o.save_every_steps;
  tc.stage_config = {{"stage", "gate"}, {"kind", o.kind}, {"vlm_input", o.vlm_input}, {"cache", o.cache}, {"distill", o.distill}};
  StageHooks h;
  h.begin_epoch = [&](int64_t epoch, size_t) { return batches.begin(epoch); };
  h.loss = [&](int64_t, size_t b) -> std::pair<torch::Tensor, int64_t> {
    torch::Tensor idx = batches.indices(b);
    torch::Tensor out = gate->forward(v_train.index_select(0, idx), h_train.index_select(0, idx));
    return {torch::cross_entropy_loss(out, train.targets.index_select(0, idx)), idx.size(0)};
  };
  h.validate = [&](int64_t) {
    if (!val) return std::numeric_limits<double>::quiet_NaN();
    return accuracy(gate->forward(v_val, h_val), val->targets);
  };
  FitResult r = fit(*gate, tc, h);
  load_trained_weights(*gate, r.best_path);
  json cfg = {{"kind", o.kind}, {"vlm_input", o.vlm_input}, {"num_classes", train.num_classes()},
              {"labels", train.labels}, {"parameters", gate->num_parameters()},
              {"vlm_identity", vlm_identity_of_cache(train.manifest)}};
  save_module((fs::path(o.out) / "gate.safetensors").string(), *gate, "emovlm.gate", cfg);
  gate->eval();
  json report = {{"stage", "gate"}, {"config", cfg}, {"best_epoch", r.best_epoch + 1},
                 {"best_val_accuracy", std::isnan(r.best_val) ? json(nullptr) : json(r.best_val)},
                 {"train_accuracy", accuracy(gate->forward(v_train, h_train), train.targets)},
                 {"cache", store_path(o.cache, report_path(o.out))}, {"optimizer_steps", steps}};
  if (val) report["val_images_in_training"] = val_shared;
  write_file_atomic(report_path(o.out), report.dump(1) + "\n");
  return report;
}

Gate load_gate(const std::string& dir, json* config) {
  const std::string p = fs::is_directory(dir) ? (fs::path(dir) / "gate.safetensors").string() : dir;
  json c = module_config(p, "emovlm.gate");
  const std::string where = p + ": metadata emovlm.gate";
  const int64_t classes = json_required<int64_t>(c, "num_classes", where);
  try {
    check_range(classes, 1, int64_t{1} << 20, "num_classes");
  } catch (const Error& e) {
    throw Error(cat(where, ": ", e.what()));
  }
  Gate g(json_required<std::string>(c, "kind", where), classes);
  load_module(p, *g);
  g->eval();
  if (config) *config = c;
  return g;
}

}  // namespace emovlm
