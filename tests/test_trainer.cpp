// The shared training loop: schedules, gradient accumulation, the NaN stop, best checkpoints.
#include <gtest/gtest.h>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/layers.h"
#include "emovlm/train/trainer.h"
#include "test_util.h"

#include <functional>
#include <map>
#include <set>

using namespace emovlm;

TEST(Trainer, Schedules) {
  OptimConfig o;
  o.lr = 1.0;
  o.schedule = "warmup";
  o.warmup_ratio = 0.1;
  EXPECT_DOUBLE_EQ(o.lr_at(0, 100), 0.1);
  EXPECT_DOUBLE_EQ(o.lr_at(9, 100), 1.0);
  EXPECT_DOUBLE_EQ(o.lr_at(50, 100), 1.0);
  o.schedule = "linear";
  EXPECT_NEAR(o.lr_at(55, 100), 0.5, 1e-12);
  o.schedule = "cosine";
  EXPECT_NEAR(o.lr_at(10, 100), 1.0, 1e-12);
  EXPECT_NEAR(o.lr_at(100, 100), 0.0, 1e-12);
  o.schedule = "bogus";
  EXPECT_THROW(o.validate(), Error);
}

namespace {
// A linear regression "stage": batch b of the epoch holds rows [b * n, (b + 1) * n).
struct Regression {
  torch::Tensor x =
      torch::randn({8, 3}, torch::TensorOptions().dtype(torch::kFloat64)).to(torch::kFloat32);
  torch::Tensor y = torch::randn({8, 1});
  StageHooks hooks(Linear& m, int64_t n) {
    StageHooks h;
    h.begin_epoch = [this, n](int64_t, size_t) { return static_cast<size_t>(8 / n); };
    h.loss = [this, &m, n](int64_t, size_t b) -> std::pair<torch::Tensor, int64_t> {
      auto xs = x.narrow(0, static_cast<int64_t>(b) * n, n),
           ys = y.narrow(0, static_cast<int64_t>(b) * n, n);
      return {(m->forward(xs) - ys).pow(2).mean(), n};
    };
    return h;
  }
};

// Two 3 -> 1 layers with the same random weights.
std::pair<Linear, Linear> twin_linears() {
  Linear a(3, 1, true), b(3, 1, true);
  init_random(*a, 1, 0.5);
  torch::NoGradGuard ng;
  b->weight.copy_(a->weight);
  b->bias.copy_(a->bias);
  return {a, b};
}
}  // namespace

// Two batches of 2 accumulated per step train as one batch of 4, and both as torch's Adam run by
// hand on the batches of 4 (the same steps, the same weights): the optimizer did step.
TEST(Trainer, GradientAccumulationEqualsTheLargerBatch) {
  torch::manual_seed(0);
  Regression r;
  test::TempDir dir;
  auto twins = twin_linears();
  Linear a = twins.first, b = twins.second;
  Linear ref(3, 1, true);
  {
    torch::NoGradGuard ng;
    ref->weight.copy_(a->weight);
    ref->bias.copy_(a->bias);
  }
  const torch::Tensor initial = a->weight.detach().clone();
  TrainConfig ca;
  ca.out_dir = dir / "a";
  ca.epochs = 3;
  ca.optim.lr = 0.1;
  ca.optim.grad_accum = 2;  // two batches of 2 per step
  TrainConfig cb = ca;
  cb.out_dir = dir / "b";
  cb.optim.grad_accum = 1;  // one batch of 4 per step
  StageHooks ha = r.hooks(a, 2), hb = r.hooks(b, 4);
  FitResult fa = fit(*a, ca, ha), fb = fit(*b, cb, hb);
  EXPECT_EQ(fa.steps, 3 * 2);
  EXPECT_EQ(fb.steps, 3 * 2);
  // the same six steps by hand: Adam (lr 0.1, torch's defaults) on the mean loss of rows [4s, 4s +
  // 4)
  torch::optim::Adam adam(ref->parameters(), torch::optim::AdamOptions(0.1));
  for (int epoch = 0; epoch < 3; ++epoch)
    for (int64_t s = 0; s < 2; ++s) {
      adam.zero_grad();
      (ref->forward(r.x.narrow(0, 4 * s, 4)) - r.y.narrow(0, 4 * s, 4)).pow(2).mean().backward();
      adam.step();
    }
  EXPECT_GT((ref->weight - initial).abs().max().item<double>(), 0.1);  // six steps of 0.1 moved it
  for (Linear* m : {&a, &b}) {
    EXPECT_TRUE(torch::allclose((*m)->weight, ref->weight, 1e-5, 1e-6))
        << (*m)->weight << " vs " << ref->weight;
    EXPECT_TRUE(torch::allclose((*m)->bias, ref->bias, 1e-5, 1e-6));
  }
  EXPECT_TRUE(file_exists(fa.metrics_path));
  // the best file (no validation: the last epoch's weights) holds the trained weights
  Linear loaded(3, 1, true);
  load_trained_weights(*loaded, fa.best_path);
  EXPECT_TRUE(torch::equal(loaded->weight, a->weight));
}

// With validation, the best file holds the weights of the best epoch, not the last: the accuracy
// is highest after epoch 2, so best.safetensors holds the weights fit() had after that epoch.
TEST(Trainer, BestEpochIsTheBestValidationEpoch) {
  torch::manual_seed(0);
  Regression r;
  test::TempDir dir;
  Linear m(3, 1, true);
  init_random(*m, 4, 0.5);
  StageHooks h = r.hooks(m, 4);
  const std::vector<double> accuracy = {0.2, 0.7, 0.5, 0.6};
  std::vector<torch::Tensor> after_epoch;
  h.validate = [&](int64_t epoch) {
    after_epoch.push_back(m->weight.detach().clone());
    return accuracy.at(static_cast<size_t>(epoch));
  };
  TrainConfig c;
  c.out_dir = dir.path();
  c.epochs = 4;
  c.optim.lr = 0.05;
  FitResult f = fit(*m, c, h);
  ASSERT_EQ(after_epoch.size(), 4u);
  EXPECT_EQ(f.best_epoch, 1);  // 0-based: the second epoch
  EXPECT_DOUBLE_EQ(f.best_val, 0.7);
  EXPECT_FALSE(torch::equal(after_epoch[1], after_epoch[3]));
  Linear best(3, 1, true);
  load_trained_weights(*best, f.best_path);
  EXPECT_TRUE(torch::equal(best->weight, after_epoch[1]));
  EXPECT_EQ(checkpoint_info(f.best_path)["trainer"]["epoch"].get<int64_t>(), 2);
}

TEST(Trainer, NanLossStopsWithStepImagesAndCheckpoint) {
  torch::manual_seed(0);
  test::TempDir dir;
  Linear m(3, 1, true);
  init_random(*m, 2, 0.5);
  Regression r;
  StageHooks h = r.hooks(m, 2);
  auto good = h.loss;
  h.loss = [&](int64_t epoch, size_t b) -> std::pair<torch::Tensor, int64_t> {
    if (epoch == 1 && b == 2) return {torch::tensor(std::nanf("")), 2};
    return good(epoch, b);
  };
  h.describe_batch = [] { return std::vector<std::string>{"img/1.jpg", "img/2.jpg"}; };
  TrainConfig c;
  c.out_dir = dir.path();
  c.epochs = 3;
  try {
    fit(*m, c, h);
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("epoch 2, batch 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("img/1.jpg, img/2.jpg"), std::string::npos) << msg;
    EXPECT_NE(msg.find("checkpoint.safetensors"), std::string::npos) << msg;
  }
  // the last good checkpoint (end of epoch 1) is kept and loads
  json info = checkpoint_info(dir / "checkpoint.safetensors");
  EXPECT_EQ(info["trainer"]["epoch"].get<int64_t>(), 1);
}

// --autocast bf16: the batches run with bfloat16 matmuls while the weights and Adam stay float32;
// training follows the float32 run to bf16 precision; an unknown mode is refused.
TEST(Trainer, AutocastBf16KeepsFloat32MasterWeights) {
  torch::manual_seed(0);
  Regression r;
  test::TempDir dir;
  auto twins = twin_linears();
  Linear a = twins.first, b = twins.second;
  TrainConfig ca;
  ca.out_dir = dir / "a";
  ca.epochs = 3;
  ca.optim.lr = 0.05;
  ca.autocast = "bf16";
  TrainConfig cb = ca;
  cb.out_dir = dir / "b";
  cb.autocast = "none";
  StageHooks ha = r.hooks(a, 2), hb = r.hooks(b, 2);
  std::set<torch::ScalarType> seen;
  auto inner = ha.loss;
  ha.loss = [&](int64_t e, size_t i) {
    seen.insert(a->forward(r.x).scalar_type());
    return inner(e, i);
  };
  fit(*a, ca, ha);
  fit(*b, cb, hb);
  EXPECT_EQ(seen, std::set<torch::ScalarType>{torch::kBFloat16});
  EXPECT_EQ(a->weight.scalar_type(), torch::kFloat32);
  EXPECT_EQ(a->forward(r.x).scalar_type(), torch::kFloat32);  // off again after fit
  EXPECT_FALSE(torch::equal(a->weight, b->weight));           // bf16 rounding did happen
  EXPECT_TRUE(torch::allclose(a->weight, b->weight, 0, 0.05));
  TrainConfig bad = cb;
  bad.autocast = "fp8";
  StageHooks hc = r.hooks(b, 2);
  EXPECT_THROW(fit(*b, bad, hc), Error);
}

// The multi-tensor step computes what torch::optim::Adam / AdamW compute, bit for bit, also when
// a parameter misses gradients at some steps (its step count then differs from the others').
TEST(Trainer, MultiTensorAdamEqualsTorchAdam) {
  for (bool adamw : {false, true}) {
    torch::manual_seed(1);
    std::vector<torch::Tensor> a = {torch::randn({5, 3}), torch::randn({7}),
                                    torch::randn({2, 2, 2})};
    std::vector<torch::Tensor> b;
    for (auto& t : a) {
      t.set_requires_grad(true);
      b.push_back(t.detach().clone().set_requires_grad(true));
    }
    std::unique_ptr<torch::optim::Optimizer> ref, ours;
    if (adamw) {
      ref = std::make_unique<torch::optim::AdamW>(
          a, torch::optim::AdamWOptions(0.01).weight_decay(0.1));
      ours = std::make_unique<torch::optim::AdamW>(
          b, torch::optim::AdamWOptions(0.01).weight_decay(0.1));
    } else {
      ref = std::make_unique<torch::optim::Adam>(a,
                                                 torch::optim::AdamOptions(0.01).weight_decay(0.1));
      ours = std::make_unique<torch::optim::Adam>(
          b, torch::optim::AdamOptions(0.01).weight_decay(0.1));
    }
    for (int step = 0; step < 6; ++step) {
      for (size_t i = 0; i < a.size(); ++i) {
        if (step == 2 && i == 1) continue;  // no gradient for this one at this step
        torch::Tensor g = torch::randn(a[i].sizes());
        a[i].mutable_grad() = g.clone();
        b[i].mutable_grad() = g.clone();
      }
      ref->step();
      multi_tensor_adam_step(*ours, adamw);
      for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_TRUE(torch::equal(a[i], b[i]))
            << (adamw ? "adamw" : "adam") << " step " << step << " tensor " << i;
        a[i].mutable_grad() = torch::Tensor();
        b[i].mutable_grad() = torch::Tensor();
      }
    }
  }
}

// Buffers (BatchNorm's running statistics) travel in the checkpoints: a run resumed after its first
// epoch ends where the uninterrupted run does, statistics included, and the best weights carry
// them.
TEST(Trainer, ResumeRestoresBatchNormStatistics) {
  struct Net : torch::nn::Module {
    Conv2d conv{nullptr};
    BatchNorm2d bn{nullptr};
    Net() {
      conv = register_module("conv", Conv2d(2, 3, 3, 1, 1, true));
      bn = register_module("bn", BatchNorm2d(3));
      init_random(*this, 3, 0.5);
    }
    torch::Tensor forward(const torch::Tensor& x) { return bn(conv(x)).mean({2, 3}); }  // [B, 3]
  };
  torch::manual_seed(0);
  torch::Tensor x = torch::randn({8, 2, 5, 5}), y = torch::randn({8, 3});
  auto hooks = [&](Net& m) {
    StageHooks h;
    h.begin_epoch = [](int64_t, size_t) { return size_t{4}; };
    h.loss = [&x, &y, &m](int64_t, size_t b) -> std::pair<torch::Tensor, int64_t> {
      const int64_t i = static_cast<int64_t>(b) * 2;
      return {(m.forward(x.narrow(0, i, 2)) - y.narrow(0, i, 2)).pow(2).mean(), 2};
    };
    return h;
  };
  test::TempDir dir;
  TrainConfig c;
  c.out_dir = dir / "straight";
  c.epochs = 2;
  c.optim.lr = 0.05;
  Net straight;
  StageHooks hs = hooks(straight);
  FitResult fs = fit(straight, c, hs);
  TrainConfig c1 = c;
  c1.out_dir = dir / "resumed";
  c1.epochs = 1;
  Net first;
  StageHooks h1 = hooks(first);
  fit(first, c1, h1);
  TrainConfig c2 = c1;
  c2.epochs = 2;
  c2.resume = true;
  Net resumed;  // the same initial weights; the checkpoint replaces them and the statistics
  {
    torch::NoGradGuard ng;
    resumed.bn->running_mean.fill_(7);
  }
  StageHooks h2 = hooks(resumed);
  const FitResult fr = fit(resumed, c2, h2);
  EXPECT_EQ(fr.epochs_run, fs.epochs_run);  // the whole run's, as without the stop
  EXPECT_EQ(fr.steps, fs.steps);
  EXPECT_EQ(resumed.bn->num_batches_tracked.item<int64_t>(), 8);
  EXPECT_TRUE(torch::equal(resumed.bn->running_mean, straight.bn->running_mean));
  EXPECT_TRUE(torch::equal(resumed.bn->running_var, straight.bn->running_var));
  EXPECT_TRUE(torch::equal(resumed.conv->weight, straight.conv->weight));
  Net loaded;
  load_trained_weights(loaded, fs.best_path);
  EXPECT_TRUE(torch::equal(loaded.bn->running_var, straight.bn->running_var));
  EXPECT_EQ(loaded.bn->num_batches_tracked.item<int64_t>(), 8);
}

// A run's checkpoint with one model tensor missing, one of the wrong shape and one the model does
// not have is refused in one error naming the file and all three, on resume and when loaded.
TEST(Trainer, ResumeReportsEveryProblemOfTheCheckpoint) {
  struct Net : torch::nn::Module {
    Linear fc{nullptr}, out{nullptr};
    Net() {
      fc = register_module("fc", Linear(3, 2, true));
      out = register_module("out", Linear(2, 1, true));
      init_random(*this, 5, 0.5);
    }
  };
  torch::manual_seed(0);
  torch::Tensor x = torch::randn({4, 3});
  auto hooks = [&x](Net& m) {
    StageHooks h;
    h.begin_epoch = [](int64_t, size_t) { return size_t{2}; };
    h.loss = [&x, &m](int64_t, size_t) -> std::pair<torch::Tensor, int64_t> {
      return {m.out->forward(m.fc->forward(x)).pow(2).mean(), 4};
    };
    return h;
  };
  test::TempDir dir;
  TrainConfig c;
  c.out_dir = dir / "run";
  c.epochs = 1;
  Net first;
  StageHooks h1 = hooks(first);
  FitResult r = fit(first, c, h1);
  // the checkpoint, spoilt: fc.bias missing, fc.weight mis-shaped, an extra tensor
  std::map<std::string, std::string> meta;
  {
    Checkpoint ck(r.checkpoint_path);
    for (const auto& [k, v] : ck.metadata()) meta[k] = v;
  }
  std::map<std::string, torch::Tensor> w;
  for (auto& [k, v] : load_tensors(r.checkpoint_path)) w[k] = v.clone();
  ASSERT_EQ(w.erase("model.fc.bias"), 1u);
  ASSERT_TRUE(w.count("model.fc.weight"));
  w["model.fc.weight"] = torch::zeros({2, 4});
  w["model.fc.scale"] = torch::zeros({2});
  save_tensors(r.checkpoint_path, w, meta);
  TrainConfig c2 = c;
  c2.epochs = 2;
  c2.resume = true;
  Net resumed;
  StageHooks h2 = hooks(resumed);
  for (const auto& load : std::vector<std::function<void()>>{
           [&] { fit(resumed, c2, h2); },
           [&] { load_trained_weights(resumed, r.checkpoint_path); }}) {
    try {
      load();
      ADD_FAILURE() << "the spoilt checkpoint was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      for (const char* part : {"checkpoint.safetensors", "missing 1", "fc.bias", "mis-shaped",
                               "model.fc.weight", "unexpected 1", "model.fc.scale"})
        EXPECT_NE(msg.find(part), std::string::npos) << part << " in: " << msg;
    }
  }
}

// Early stopping: with patience 2 and validation accuracies that stop improving after epoch 2,
// the run ends after epoch 4 and keeps epoch 2's weights; resuming the stopped run trains no more.
TEST(Trainer, EarlyStoppingEndsAfterPatienceAndStaysStopped) {
  torch::manual_seed(0);
  Regression r;
  test::TempDir dir;
  Linear m(3, 1, true);
  init_random(*m, 4, 0.5);
  StageHooks h = r.hooks(m, 4);
  const std::vector<double> accuracy = {0.2, 0.7, 0.5, 0.6, 0.9, 0.9, 0.9, 0.9};
  int validations = 0;
  h.validate = [&](int64_t epoch) {
    ++validations;
    return accuracy.at(static_cast<size_t>(epoch));
  };
  TrainConfig c;
  c.out_dir = dir.path();
  c.epochs = 8;
  c.patience = 2;
  c.optim.lr = 0.05;
  FitResult f = fit(*m, c, h);
  EXPECT_TRUE(f.stopped_early);
  EXPECT_EQ(f.epochs_run, 4);
  EXPECT_EQ(validations, 4);
  EXPECT_EQ(f.best_epoch, 1);
  c.resume = true;
  FitResult again = fit(*m, c, h);
  EXPECT_TRUE(again.stopped_early);
  EXPECT_EQ(again.epochs_run, 4);  // the run's epochs, though this call ran none
  EXPECT_EQ(validations, 4);
  // without patience the same run goes on to epoch 5's better accuracy
  test::TempDir dir2;
  c.out_dir = dir2.path();
  c.resume = false;
  c.patience = 0;
  validations = 0;
  FitResult all = fit(*m, c, h);
  EXPECT_FALSE(all.stopped_early);
  EXPECT_EQ(all.epochs_run, 8);
  EXPECT_EQ(all.best_epoch, 4);
}

// validate_start: the starting weights are validated too; when no epoch beats them, the best file
// holds them (best_epoch -1) and metrics.jsonl starts with their line (epoch 0).
TEST(Trainer, StartingWeightsCanBeTheBest) {
  torch::manual_seed(0);
  Regression r;
  test::TempDir dir;
  Linear m(3, 1, true);
  init_random(*m, 4, 0.5);
  const torch::Tensor start = m->weight.detach().clone();
  StageHooks h = r.hooks(m, 4);
  std::vector<int64_t> seen;
  h.validate = [&](int64_t epoch) {
    seen.push_back(epoch);
    return epoch < 0 ? 0.9 : 0.5;
  };
  TrainConfig c;
  c.out_dir = dir.path();
  c.epochs = 3;
  c.optim.lr = 0.05;
  c.validate_start = true;
  FitResult f = fit(*m, c, h);
  EXPECT_EQ(seen, (std::vector<int64_t>{-1, 0, 1, 2}));
  EXPECT_EQ(f.best_epoch, -1);
  EXPECT_DOUBLE_EQ(f.best_val, 0.9);
  EXPECT_TRUE(torch::equal(m->weight, start));  // fit returns with the best weights
  Linear last(3, 1, true);
  load_trained_weights(*last, f.checkpoint_path);
  EXPECT_FALSE(torch::equal(last->weight, start));  // it trained
  Linear best(3, 1, true);
  load_trained_weights(*best, f.best_path);
  EXPECT_TRUE(torch::equal(best->weight, start));
  const std::string metrics = read_file(f.metrics_path);
  EXPECT_EQ(metrics.rfind("{\"best\":true,\"epoch\":0,", 0), 0u) << metrics;
}
