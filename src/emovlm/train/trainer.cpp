// The shared training loop.
#include "emovlm/train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/progress.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/dist/grad_reducer.h"
#include "emovlm/dist/process_group.h"
#include "emovlm/models/weights.h"

namespace emovlm {

namespace fs = std::filesystem;

json OptimConfig::to_json() const {
  return {{"optimizer", optimizer},
          {"lr", lr},
          {"weight_decay", weight_decay},
          {"beta1", beta1},
          {"beta2", beta2},
          {"eps", eps},
          {"schedule", schedule},
          {"warmup_ratio", warmup_ratio},
          {"max_grad_norm", max_grad_norm},
          {"grad_accum", grad_accum}};
}

OptimConfig OptimConfig::from_json(const json& j, const std::string& where) {
  OptimConfig o;
  o.optimizer = json_optional<std::string>(j, "optimizer", o.optimizer, where);
  o.lr = json_optional<double>(j, "lr", o.lr, where);
  o.weight_decay = json_optional<double>(j, "weight_decay", o.weight_decay, where);
  o.beta1 = json_optional<double>(j, "beta1", o.beta1, where);
  o.beta2 = json_optional<double>(j, "beta2", o.beta2, where);
  o.eps = json_optional<double>(j, "eps", o.eps, where);
  o.schedule = json_optional<std::string>(j, "schedule", o.schedule, where);
  o.warmup_ratio = json_optional<double>(j, "warmup_ratio", o.warmup_ratio, where);
  o.max_grad_norm = json_optional<double>(j, "max_grad_norm", o.max_grad_norm, where);
  o.grad_accum = json_optional<int>(j, "grad_accum", o.grad_accum, where);
  try {
    o.validate();
  } catch (const Error& e) {
    throw Error(cat(where, ": ", e.what()));
  }
  return o;
}

void OptimConfig::validate() const {
  check(optimizer == "adam" || optimizer == "adamw",
        cat("optimizer must be adam or adamw, not '", optimizer, "'"));
  check(schedule == "constant" || schedule == "warmup" || schedule == "linear" ||
            schedule == "cosine",
        cat("schedule must be constant, warmup, linear or cosine, not '", schedule, "'"));
  check(lr > 0, cat("learning rate must be positive, got ", lr));
  check(weight_decay >= 0 && max_grad_norm >= 0 && warmup_ratio >= 0 && warmup_ratio < 1,
        "weight decay, max grad norm and warm-up ratio must be non-negative (warm-up below 1)");
  check(grad_accum >= 1, cat("gradient accumulation must be at least 1, got ", grad_accum));
}

double OptimConfig::lr_at(int64_t step, int64_t total) const {
  const int64_t warm = static_cast<int64_t>(std::ceil(warmup_ratio * total));
  if (warm > 0 && step < warm)
    return lr * static_cast<double>(step + 1) / static_cast<double>(warm);
  if (schedule == "constant" || schedule == "warmup") return lr;
  const double progress =
      total > warm ? static_cast<double>(step - warm) / static_cast<double>(total - warm) : 1.0;
  if (schedule == "linear") return lr * std::max(0.0, 1.0 - progress);
  return lr * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));  // cosine
}

namespace {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<torch::Tensor>& params,
                                                        const OptimConfig& c) {
  if (c.optimizer == "adamw")
    return std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(c.lr)
                                                             .betas({c.beta1, c.beta2})
                                                             .eps(c.eps)
                                                             .weight_decay(c.weight_decay));
  return std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(c.lr)
                                                          .betas({c.beta1, c.beta2})
                                                          .eps(c.eps)
                                                          .weight_decay(c.weight_decay));
}

template <typename State, typename Options>
void adam_step(torch::optim::Optimizer& opt, bool adamw) {
  torch::NoGradGuard ng;
  auto& states = opt.state();
  for (auto& group : opt.param_groups()) {
    auto& o = static_cast<Options&>(group.options());
    if (o.amsgrad()) throw Error("multi_tensor_adam_step: amsgrad is not supported");
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas()), lr = o.lr(),
                 wd = o.weight_decay();
    // the parameters with a gradient, grouped by their step count after this step
    std::map<int64_t, std::vector<size_t>> by_step;
    std::vector<torch::Tensor> params, grads, avgs, sqs;
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (p.grad().is_sparse())
        throw Error("multi_tensor_adam_step: sparse gradients are not supported");
      auto key = compat::optimizer_state_key(p);
      auto it = states.find(key);
      if (it == states.end()) {
        auto s = std::make_unique<State>();
        s->step(0);
        s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = states.emplace(key, std::move(s)).first;
      }
      auto& s = static_cast<State&>(*it->second);
      s.step(s.step() + 1);
      by_step[s.step()].push_back(params.size());
      params.push_back(p);
      grads.push_back(p.grad());
      avgs.push_back(s.exp_avg());
      sqs.push_back(s.exp_avg_sq());
    }
    for (const auto& [step, idx] : by_step) {
      auto pick = [&](const std::vector<torch::Tensor>& v) {
        std::vector<torch::Tensor> out;
        out.reserve(idx.size());
        for (size_t i : idx) out.push_back(v[i]);
        return out;
      };
      std::vector<torch::Tensor> P = pick(params), G = pick(grads), M = pick(avgs), V = pick(sqs);
      if (wd != 0) {
        if (adamw)
          torch::_foreach_mul_(P, 1 - lr * wd);  // decoupled decay of the weights
        else
          G = torch::_foreach_add(G, P, wd);  // L2: grad + wd * p (a new list; the .grad stays)
      }
      const double bc1 = 1 - std::pow(beta1, static_cast<double>(step)),
                   bc2 = 1 - std::pow(beta2, static_cast<double>(step));
      torch::_foreach_mul_(M, beta1);
      torch::_foreach_add_(M, G, 1 - beta1);
      torch::_foreach_mul_(V, beta2);
      torch::_foreach_addcmul_(V, G, G, 1 - beta2);
      std::vector<torch::Tensor> denom = torch::_foreach_sqrt(V);
      torch::_foreach_div_(denom, std::sqrt(bc2));
      torch::_foreach_add_(denom, o.eps());
      torch::_foreach_addcdiv_(P, M, denom, -lr / bc1);
    }
  }
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) g.options().set_lr(lr);
}

struct Trainable {
  std::vector<std::string> names;
  std::vector<torch::Tensor> params;
  // state that training changes besides the parameters (BatchNorm's running statistics): saved and
  // restored with them
  std::vector<std::string> buffer_names;
  std::vector<torch::Tensor> buffers;
  torch::Device device{torch::kCPU};  // of the first parameter: where the batches run
};

Trainable trainable(torch::nn::Module& m) {
  Trainable t;
  std::set<const void*> seen;  // tied weights (one tensor under two names) are trained once
  for (auto& p : m.named_parameters())
    if (p.value().requires_grad() && seen.insert(p.value().unsafeGetTensorImpl()).second)
      t.names.push_back(p.key()), t.params.push_back(p.value());
  if (t.params.empty()) throw Error("training: the model has no trainable parameters");
  for (auto& b : m.named_buffers())
    t.buffer_names.push_back(b.key()), t.buffers.push_back(b.value());
  t.device = t.params[0].device();
  return t;
}

// How a run's file gives back the model: "model.<name>" for each trainable parameter and buffer
// (required), copied into the tensors the optimizer holds; other parameters (frozen, or the second
// name of a tied weight) are not in the file and stay as they are; the file's other tensors (the
// optimizer's state, the RNG) are not the model's.
LoadOptions run_load_options(const Trainable& t) {
  auto saved = std::make_shared<std::set<std::string>>(t.names.begin(), t.names.end());
  saved->insert(t.buffer_names.begin(), t.buffer_names.end());
  LoadOptions opt;
  opt.copy_into = true;
  opt.candidates = [](const std::string& n) { return std::vector<std::string>{"model." + n}; };
  opt.optional = [saved](const std::string& n) { return saved->count(n) == 0; };
  opt.ignore_unused = [](const std::string& n) { return n.rfind("model.", 0) != 0; };
  return opt;
}

// "model.<name>" for every parameter and buffer
NamedTensors model_tensors(const Trainable& t) {
  NamedTensors ts;
  for (size_t i = 0; i < t.params.size(); ++i) ts.emplace_back("model." + t.names[i], t.params[i]);
  for (size_t i = 0; i < t.buffers.size(); ++i)
    ts.emplace_back("model." + t.buffer_names[i], t.buffers[i]);
  return ts;
}

// Adam/AdamW state per parameter: step, exp_avg, exp_avg_sq.
template <typename State>
void save_state(torch::optim::Optimizer& opt, const Trainable& t, NamedTensors& out) {
  auto& states = opt.state();
  for (size_t i = 0; i < t.params.size(); ++i) {
    auto it = states.find(compat::optimizer_state_key(t.params[i]));
    if (it == states.end()) continue;
    auto& s = static_cast<State&>(*it->second);
    out.emplace_back("optim." + t.names[i] + ".exp_avg", s.exp_avg());
    out.emplace_back("optim." + t.names[i] + ".exp_avg_sq", s.exp_avg_sq());
    out.emplace_back("optim." + t.names[i] + ".step",
                     torch::tensor({static_cast<int64_t>(s.step())}, torch::kInt64));
  }
}

template <typename State>
void load_state(torch::optim::Optimizer& opt, const Trainable& t,
                const std::map<std::string, torch::Tensor>& in) {
  auto& states = opt.state();
  for (size_t i = 0; i < t.params.size(); ++i) {
    const std::string key = "optim." + t.names[i];
    auto a = in.find(key + ".exp_avg");
    if (a == in.end()) continue;
    auto s = std::make_unique<State>();
    s->step(in.at(key + ".step").item<int64_t>());
    s->exp_avg(a->second.clone().to(t.params[i].device()));
    s->exp_avg_sq(in.at(key + ".exp_avg_sq").clone().to(t.params[i].device()));
    states[compat::optimizer_state_key(t.params[i])] = std::move(s);
  }
}

struct Position {
  int64_t epoch = 0;
  size_t batch = 0;  // next batch of the epoch
  int64_t step = 0;  // optimizer steps done
  double best_val = std::numeric_limits<double>::quiet_NaN();
  int64_t best_epoch = -1;
};

void write_checkpoint(const std::string& path, const Trainable& t, torch::optim::Optimizer& opt,
                      const OptimConfig& oc, const Position& pos, const TrainConfig& cfg) {
  NamedTensors ts = model_tensors(t);
  if (oc.optimizer == "adamw")
    save_state<torch::optim::AdamWParamState>(opt, t, ts);
  else
    save_state<torch::optim::AdamParamState>(opt, t, ts);
  ts.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
  if (t.device.is_cuda())
    ts.emplace_back("rng.cuda", at::globalContext().defaultGenerator(t.device).get_state());
  json meta = {{"epoch", pos.epoch},
               {"batch", pos.batch},
               {"step", pos.step},
               {"best_epoch", pos.best_epoch},
               {"best_val", std::isnan(pos.best_val) ? json(nullptr) : json(pos.best_val)},
               {"optim", oc.to_json()},
               {"seed", cfg.seed}};
  save_tensors(path, ts,
               {{"emovlm.trainer", meta.dump()},
                {"emovlm.config", cfg.stage_config.dump()},
                {"emovlm.classes", json(cfg.classes).dump()}});
}

void write_weights(const std::string& path, const Trainable& t, const TrainConfig& cfg,
                   const json& info) {
  save_tensors(path, model_tensors(t),
               {{"emovlm.trainer", info.dump()},
                {"emovlm.config", cfg.stage_config.dump()},
                {"emovlm.classes", json(cfg.classes).dump()}});
}

// The checkpoint to resume from, read by rank 0 and sent to the others (a machine of its own need
// not see rank 0's files): its metadata and tensors. None when there is nothing to resume.
struct ResumeState {
  json info;
  std::map<std::string, torch::Tensor> tensors;
};

std::optional<ResumeState> read_resume_state(const TrainConfig& cfg, const std::string& path) {
  std::optional<ResumeState> st;
  if (dist::is_main() && cfg.resume && file_exists(path))
    st = ResumeState{checkpoint_info(path), load_tensors(path)};
  if (!dist::active()) return st;
  std::string header;  // what rank 0 read: the metadata, and each tensor's name, dtype and shape
  if (dist::is_main()) {
    json h = {{"resume", st.has_value()}};
    if (st) {
      h["info"] = st->info;
      h["tensors"] = json::array();
      for (const auto& [name, t] : st->tensors)
        h["tensors"].push_back({name, static_cast<int>(t.scalar_type()), t.sizes().vec()});
    }
    header = h.dump();
  }
  dist::broadcast_bytes(header);
  const json h = json::parse(header);
  if (!h["resume"].get<bool>()) return std::nullopt;
  if (!st) st = ResumeState{h["info"], {}};
  std::vector<torch::Tensor> ts;
  for (const auto& e : h["tensors"]) {
    const std::string name = e[0];
    torch::Tensor& t = st->tensors[name];
    if (dist::is_main())
      t = t.contiguous();
    else
      t = torch::empty(e[2].get<std::vector<int64_t>>(),
                       static_cast<torch::ScalarType>(e[1].get<int>()));
    ts.push_back(t);
  }
  dist::broadcast(ts);
  return st;
}

// The parameters and buffers, as tensors the collectives write into.
std::vector<torch::Tensor> state_tensors(const Trainable& t, bool with_params) {
  std::vector<torch::Tensor> v;
  if (with_params)
    for (const auto& p : t.params) v.push_back(p.detach());
  for (const auto& b : t.buffers) v.push_back(b.detach());
  return v;
}

}  // namespace

bool owns_batch(size_t batch, int grad_accum) {
  return dist::owns_micro_batch(
      static_cast<int64_t>(batch % static_cast<size_t>(std::max(grad_accum, 1))));
}

void multi_tensor_adam_step(torch::optim::Optimizer& opt, bool adamw) {
  if (adamw)
    adam_step<torch::optim::AdamWParamState, torch::optim::AdamWOptions>(opt, true);
  else
    adam_step<torch::optim::AdamParamState, torch::optim::AdamOptions>(opt, false);
}

TrainConfig train_config(const std::string& out_dir, int64_t epochs, uint64_t seed, bool resume,
                         const OptimConfig& optim, const std::string& progress_label) {
  TrainConfig tc;
  tc.out_dir = out_dir;
  tc.epochs = epochs;
  tc.seed = seed;
  tc.resume = resume;
  tc.optim = optim;
  tc.progress_label = progress_label;
  return tc;
}

RunOutput::RunOutput(const std::string& out, const std::string& state_dir, bool resume,
                     bool overwrite) {
  if (resume && overwrite)
    throw Error("--resume continues a run and --overwrite starts over: give one of them");
  if (!dist::is_main()) return;
  lock_ = std::make_unique<OutputLock>(out, OutputLock::Kind::Directory);
  const std::string ck = (fs::path(state_dir) / "checkpoint.safetensors").string();
  const std::string metrics = (fs::path(state_dir) / "metrics.jsonl").string();
  if (!resume && !overwrite && (file_exists(ck) || file_exists(metrics)))
    throw Error(cat(out, ": holds an earlier run (", file_exists(ck) ? ck : metrics,
                    "); --resume continues it, --overwrite starts over, or choose another --out"));
  if (state_dir != out && is_directory(state_dir)) remove_stale_temporaries(state_dir);
}

json checkpoint_info(const std::string& path) {
  Checkpoint ck(path);
  auto m = ck.metadata();
  json j;
  for (const char* k : {"emovlm.trainer", "emovlm.config", "emovlm.classes"}) {
    auto it = m.find(k);
    j[std::string(k).substr(7)] = it == m.end() ? json(nullptr) : json::parse(it->second);
  }
  return j;
}

void load_trained_weights(torch::nn::Module& model, const std::string& path) {
  load_weights(model, Checkpoint(path), run_load_options(trainable(model)));
}

namespace {

// Puts a checkpoint's state back: the weights, the optimizer's moments, the random generators and
// the position in the run.
void restore_run(torch::nn::Module& model, const Trainable& t, torch::optim::Optimizer& opt,
                 const TrainConfig& cfg, const ResumeState& resumed, const std::string& path,
                 Position& pos) {
  const json& info = resumed.info;
  const auto& w = resumed.tensors;
  if (info["classes"].is_array() && info["classes"].get<std::vector<std::string>>() != cfg.classes)
    throw Error(cat(path, ": the checkpoint's classes differ from this run's; refusing to resume"));
  load_weights(model, w, path, run_load_options(t));
  if (cfg.optim.optimizer == "adamw")
    load_state<torch::optim::AdamWParamState>(opt, t, w);
  else
    load_state<torch::optim::AdamParamState>(opt, t, w);
  at::Generator g = at::detail::getDefaultCPUGenerator();
  g.set_state(w.at("rng.cpu").clone());
  if (t.device.is_cuda() && w.count("rng.cuda")) {
    at::Generator gc = at::globalContext().defaultGenerator(t.device);
    gc.set_state(w.at("rng.cuda").clone());
  }
  const json& tr = info["trainer"];
  pos.epoch = tr["epoch"];
  pos.batch = tr["batch"];
  pos.step = tr["step"];
  pos.best_epoch = tr["best_epoch"];
  pos.best_val = tr["best_val"].is_null() ? std::numeric_limits<double>::quiet_NaN()
                                          : tr["best_val"].get<double>();
  std::fprintf(stderr, "resuming %s at epoch %lld, batch %zu (step %lld)\n", cfg.out_dir.c_str(),
               static_cast<long long>(pos.epoch + 1), pos.batch, static_cast<long long>(pos.step));
}

// The lines of metrics.jsonl for the epochs up to `epochs` (a run killed after writing an epoch's
// line but before its checkpoint repeats that epoch: its line is written once).
std::string kept_metric_lines(const std::string& path, int64_t epochs) {
  std::string lines;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.is_object() && json_optional<int64_t>(j, "epoch", 0, path) <= epochs)
      lines += line + "\n";
  }
  return lines;
}

// TrainConfig::validate_start: the starting weights validated as epoch 0, and kept as the best
// so far when they validate.
void validate_start(torch::nn::Module& model, const Trainable& t, const TrainConfig& cfg,
                    StageHooks& hooks, const FitResult& res, Position& pos,
                    std::string& metric_lines) {
  model.eval();
  double val;
  {
    torch::NoGradGuard ng;
    val = hooks.validate(-1);
  }
  if (std::isnan(val)) return;
  pos.best_val = val;
  pos.best_epoch = -1;
  if (dist::is_main()) {
    write_weights(res.best_path, t, cfg, {{"epoch", 0}, {"val_accuracy", val}});
    metric_lines += json{{"epoch", 0},
                         {"step", 0},
                         {"train_loss", nullptr},
                         {"val_accuracy", val},
                         {"best", true}}
                        .dump() +
                    "\n";
    write_file_atomic(res.metrics_path, metric_lines);
  }
  std::fprintf(stderr, "%s: the starting weights: val acc %g\n", cfg.progress_label.c_str(), val);
}

// What one epoch's batches came to, over every process.
struct EpochStats {
  double loss_sum = 0;  // of every example's loss
  int64_t examples = 0;
  double comm_seconds = 0;  // in the collectives (waiting for the others included)
  int64_t total_steps = 0;  // of the run, at this epoch's steps per epoch (the schedule's length)
};

// The batches pos.batch .. nb-1 of epoch pos.epoch: forward and backward through the hooks,
// gradients summed over the processes for each step (every `grad_accum` batches and at the end;
// with `reducer`, during the step's last backward on this process), clipped, and the optimizer
// step; a checkpoint every cfg.save_every_steps steps.
EpochStats train_epoch(const Trainable& t, torch::optim::Optimizer& opt, const TrainConfig& cfg,
                       StageHooks& hooks, const FitResult& res, size_t nb, Position& pos,
                       dist::GradReducer* reducer) {
  const bool main = dist::is_main(), parallel = dist::active();
  const int accum = cfg.optim.grad_accum;
  const bool dealt = parallel && hooks.one_example_per_batch;  // batches dealt to the processes
  EpochStats e;
  const int64_t steps_per_epoch = static_cast<int64_t>((nb + accum - 1) / accum);
  e.total_steps = steps_per_epoch * cfg.epochs;
  Progress bar(cat(cfg.progress_label, " epoch ", pos.epoch + 1, "/", cfg.epochs),
               static_cast<int64_t>(nb - pos.batch), cfg.unit);
  // the time spent waiting for the other processes (a sum under backward costs only its rest)
  auto timed_wait = [&](const std::function<void()>& fn) {
    const auto c0 = std::chrono::steady_clock::now();
    fn();
    e.comm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
  };
  auto timed = [&](std::vector<torch::Tensor>& v) { timed_wait([&] { dist::all_reduce_sum(v); }); };
  // whether batch b's backward is the last of its step on this process: the step's last batch,
  // or (batches dealt) the last of the step's batches that this process computes
  auto last_backward_of_step = [&](size_t b) {
    const size_t end = std::min(nb, (b / accum + 1) * static_cast<size_t>(accum));
    if (!dealt) return b + 1 == end;
    for (size_t j = b + 1; j < end; ++j)
      if (owns_batch(j, accum)) return false;
    return true;
  };
  opt.zero_grad();
  // the examples of the current step: all processes' (dealt: this process's, summed at the step)
  double step_loss = 0;
  int64_t step_examples = 0;
  // A step is `accum` batches counted from the epoch's first (the last one may be shorter); a
  // batch without a usable example adds nothing, and a step without any is not taken.
  for (size_t b = pos.batch; b < nb; ++b) {
    torch::Tensor loss;
    int64_t n = 0;
    if (!dealt || owns_batch(b, accum)) {
      compat::AutocastGuard autocast(t.device.type(), torch::kBFloat16, cfg.autocast == "bf16");
      std::tie(loss, n) = hooks.loss(pos.epoch, b);
    }
    const double loss_value = n > 0 ? loss.item<double>() : 0.0;  // one device sync per batch
    // this batch over all processes: examples and summed loss (each process computed a share)
    int64_t batch_n = n;
    double batch_loss = loss_value * static_cast<double>(n);
    if (parallel && !dealt) {
      std::vector<torch::Tensor> sums{
          torch::tensor({static_cast<double>(n), batch_loss}, torch::kFloat64)};
      timed(sums);
      batch_n = static_cast<int64_t>(std::llround(sums[0][0].item<double>()));
      batch_loss = sums[0][1].item<double>();
    }
    if (n > 0 || batch_n > 0) {
      const double mean = batch_n > 0 ? batch_loss / static_cast<double>(batch_n) : loss_value;
      if (!std::isfinite(mean) || !std::isfinite(loss_value)) {
        std::string where;
        if (hooks.describe_batch && n > 0)
          for (const auto& p : hooks.describe_batch()) where += (where.empty() ? "" : ", ") + p;
        throw Error(cat("the loss is ", std::isfinite(loss_value) ? mean : loss_value, " at epoch ",
                        pos.epoch + 1, ", batch ", b + 1, ", step ", pos.step,
                        (where.empty() ? "" : " (images: " + where + ")"),
                        "; the last good checkpoint is ",
                        file_exists(res.checkpoint_path) ? res.checkpoint_path : "(none yet)"));
      }
      // this process's share of the batch's mean: its rows' mean weighted by its part of the rows
      if (n > 0) {
        if (reducer && last_backward_of_step(b)) reducer->arm();
        (loss * (static_cast<double>(n) / static_cast<double>(dealt ? n : batch_n) / accum))
            .backward();
      }
      step_loss += batch_loss;
      step_examples += batch_n;
      if (bar.enabled() && !dealt) {
        char buf[48];
        std::snprintf(buf, sizeof buf, "loss %.4f",
                      (e.loss_sum + step_loss) / static_cast<double>(e.examples + step_examples));
        bar.set_postfix(buf);
      }
    }
    bar.advance(dealt ? 1 : batch_n);
    const bool boundary = (b + 1) % static_cast<size_t>(accum) == 0 || b + 1 == nb;
    if (!boundary) continue;
    if (parallel) {
      // the step's gradients (and, dealt, its examples and loss) summed over the processes;
      // a parameter this process's batches did not reach adds zeros
      std::vector<torch::Tensor> sums;
      if (reducer) {
        timed_wait([&] { reducer->finish(); });  // (what is left of the sums after backward)
      } else {
        for (auto p : t.params) {
          if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
          sums.push_back(p.grad());
        }
      }
      if (dealt)
        sums.push_back(
            torch::tensor({static_cast<double>(step_examples), step_loss}, torch::kFloat64));
      timed(sums);
      if (dealt) {
        step_examples = static_cast<int64_t>(std::llround(sums.back()[0].item<double>()));
        step_loss = sums.back()[1].item<double>();
      }
    }
    e.loss_sum += step_loss;
    e.examples += step_examples;
    if (step_examples > 0) {
      if (cfg.optim.max_grad_norm > 0)
        torch::nn::utils::clip_grad_norm_(t.params, cfg.optim.max_grad_norm);
      set_lr(opt, cfg.optim.lr_at(pos.step, e.total_steps));
      multi_tensor_adam_step(opt, cfg.optim.optimizer == "adamw");
      ++pos.step;
      if (main && cfg.save_every_steps > 0 && pos.step % cfg.save_every_steps == 0 && b + 1 < nb) {
        Position at = pos;
        at.batch = b + 1;
        write_checkpoint(res.checkpoint_path, t, opt, cfg.optim, at, cfg);
      }
    }
    opt.zero_grad();
    step_loss = 0;
    step_examples = 0;
  }
  bar.finish();
  return e;
}

}  // namespace

FitResult fit(torch::nn::Module& model, const TrainConfig& cfg, StageHooks& hooks) {
  cfg.optim.validate();
  if (cfg.autocast != "none" && cfg.autocast != "bf16")
    throw Error(cat("--autocast must be none or bf16, not '", cfg.autocast, "'"));
  const bool main = dist::is_main(), parallel = dist::active();
  if (main) make_dirs(cfg.out_dir);
  FitResult res;
  res.checkpoint_path = (fs::path(cfg.out_dir) / "checkpoint.safetensors").string();
  res.best_path = (fs::path(cfg.out_dir) / "best.safetensors").string();
  res.metrics_path = (fs::path(cfg.out_dir) / "metrics.jsonl").string();

  Trainable t = trainable(model);
  std::unique_ptr<torch::optim::Optimizer> opt = make_optimizer(t.params, cfg.optim);
  Position pos;
  torch::manual_seed(cfg.seed);

  const std::optional<ResumeState> resumed = read_resume_state(cfg, res.checkpoint_path);
  if (resumed) {
    restore_run(model, t, *opt, cfg, *resumed, res.checkpoint_path, pos);
  } else if (parallel) {
    // one start for all: rank 0's initial weights
    std::vector<torch::Tensor> st = state_tensors(t, true);
    dist::broadcast(st);
  }
  // several processes: each step's gradients summed while backward runs, unless turned off
  std::unique_ptr<dist::GradReducer> reducer;
  if (parallel && dist::options().overlap_gradients)
    reducer = std::make_unique<dist::GradReducer>(t.params);
  std::string metric_lines;
  if (main && resumed && pos.epoch > 0 && file_exists(res.metrics_path))
    metric_lines = kept_metric_lines(res.metrics_path, pos.epoch);
  if (cfg.validate_start && hooks.validate && !resumed)
    validate_start(model, t, cfg, hooks, res, pos, metric_lines);

  // one line per epoch on stderr; a long run of short epochs (the step budget of a small dataset)
  // says about 20 of them, and every improvement is in metrics.jsonl
  const int64_t log_every = std::max<int64_t>(1, cfg.epochs / 20);
  for (; pos.epoch < cfg.epochs; ++pos.epoch, pos.batch = 0) {
    if (cfg.patience > 0 && !std::isnan(pos.best_val) && pos.batch == 0 &&
        pos.epoch - 1 - pos.best_epoch >= cfg.patience) {
      std::fprintf(stderr,
                   "%s: stopping after epoch %lld: no better validation accuracy in %lld epochs "
                   "(best %.4f at epoch %lld)\n",
                   cfg.progress_label.c_str(), static_cast<long long>(pos.epoch),
                   static_cast<long long>(cfg.patience), pos.best_val,
                   static_cast<long long>(pos.best_epoch + 1));
      res.stopped_early = true;
      break;
    }
    model.train();
    const size_t nb = hooks.begin_epoch(pos.epoch, pos.batch);
    const auto t0 = std::chrono::steady_clock::now();
    const EpochStats e = train_epoch(t, *opt, cfg, hooks, res, nb, pos, reducer.get());
    if (e.examples == 0)
      throw Error(cat(cfg.progress_label, ": no usable example in epoch ", pos.epoch + 1,
                      hooks.describe_empty_epoch ? cat(" (", hooks.describe_empty_epoch(), ")")
                                                 : std::string()));
    if (parallel && !t.buffers.empty()) {
      std::vector<torch::Tensor> bufs = state_tensors(t, false);  // rank 0's running statistics
      dist::broadcast(bufs);
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double train_loss = e.loss_sum / static_cast<double>(e.examples);

    // validation, the best weights, the epoch's metrics line and the checkpoint
    model.eval();
    double val = std::numeric_limits<double>::quiet_NaN();
    {
      torch::NoGradGuard ng;
      if (hooks.validate) val = hooks.validate(pos.epoch);
    }
    const bool improved = std::isnan(val) ? true : (std::isnan(pos.best_val) || val > pos.best_val);
    if (improved) {
      pos.best_val = val;
      pos.best_epoch = pos.epoch;
      if (main)
        write_weights(res.best_path, t, cfg,
                      {{"epoch", pos.epoch + 1},
                       {"val_accuracy", std::isnan(val) ? json(nullptr) : json(val)}});
    }
    json line = {{"epoch", pos.epoch + 1},
                 {"step", pos.step},
                 {"train_loss", train_loss},
                 {"val_accuracy", std::isnan(val) ? json(nullptr) : json(val)},
                 {"lr", cfg.optim.lr_at(std::max<int64_t>(0, pos.step - 1), e.total_steps)},
                 {"examples_per_s", secs > 0 ? e.examples / secs : 0.0},
                 {"seconds", secs},
                 {"best", improved}};
    if (parallel)
      line["processes"] = dist::world_size(), line["all_reduce_seconds"] = e.comm_seconds;
    metric_lines += line.dump() + "\n";
    if (main) write_file_atomic(res.metrics_path, metric_lines);
    if ((pos.epoch + 1) % log_every == 0 || pos.epoch + 1 == cfg.epochs)
      std::fprintf(stderr, "%s epoch %lld: loss %.4f%s, %.1f %s/s\n", cfg.progress_label.c_str(),
                   static_cast<long long>(pos.epoch + 1), train_loss,
                   std::isnan(val) ? "" : cat(", val acc ", val).c_str(),
                   secs > 0 ? e.examples / secs : 0.0, cfg.unit.c_str());
    Position next = pos;
    next.epoch += 1;
    next.batch = 0;
    if (main) write_checkpoint(res.checkpoint_path, t, *opt, cfg.optim, next, cfg);
    res.last_train_loss = train_loss;
  }
  res.epochs_run = pos.epoch;  // the run's, a resumed run's epochs before this process included
  res.steps = pos.step;
  res.best_val = pos.best_val;
  res.best_epoch = pos.best_epoch;
  // the best weights in the module, on every process
  if (main) load_trained_weights(model, res.best_path);
  if (parallel) {
    std::vector<torch::Tensor> st = state_tensors(t, true);
    dist::broadcast(st);
  }
  return res;
}

}  // namespace emovlm
