// The pipeline end to end on the tiny reference models and a generated dataset: teacher training,
// the feature cache (resume and refusal), stages 2 and 3, evaluation, bundle and prediction; and
// exact resume of a training run killed with SIGKILL.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <filesystem>
#include <thread>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/labels.h"
#include "emovlm/models/qwen2vl_config.h"
#include "emovlm/pipeline/ablation.h"
#include "emovlm/pipeline/classify.h"
#include "emovlm/pipeline/evaluate.h"
#include "emovlm/pipeline/feature_cache.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/serve/prediction_server.h"
#include "emovlm/train/distill.h"
#include "emovlm/train/teacher.h"
#include "test_util.h"

#if defined(EMOVLM_HAVE_HTTP)
#include <httplib.h>
#endif

extern char** environ;

using namespace emovlm;
namespace fs = std::filesystem;

namespace {

// ROOT/{train,val,test}/<mikels8 class>/k.png: class c is tinted by hue c, so it can be learnt.
void make_dataset(const std::string& root, int per_class) {
  LabelSet ls = LabelSet::from_spec("mikels8");
  const char* splits[] = {"train", "val", "test"};
  for (int si = 0; si < 3; ++si)
    for (int c = 0; c < ls.size(); ++c)
      for (int k = 0; k < per_class; ++k) {
        const std::string split = splits[si];
        RgbImage img(40 + 3 * k, 36);
        for (int y = 0; y < img.height; ++y)
          for (int x = 0; x < img.width; ++x) {
            uint8_t* p = img.row(y) + 3 * x;
            p[0] = static_cast<uint8_t>(30 * c + x);
            p[1] = static_cast<uint8_t>(255 - 30 * c + y);
            p[2] = static_cast<uint8_t>((x * y + k * 17 + 101 * si) % 256);  // no image in two splits
          }
        std::string dir = root + "/" + split + "/" + ls.labels[c];
        fs::create_directories(dir);
        write_image_file(dir + "/" + std::to_string(k) + ".png", img);
      }
}

struct World {
  test::TempDir tmp;
  std::string data, teacher, qwen;
  World() {
    data = tmp / "data";
    teacher = tmp / "teacher";
    qwen = test::ref_path("qwen2vl_tiny");
    make_dataset(data, 2);
    TeacherOptions t;
    t.data = data;
    t.init = test::ref_path("vit_tiny");
    t.out = teacher;
    t.dataset.labels = "mikels8";
    t.epochs = 1;
    t.batch_size = 4;
    t.optim.lr = 1e-3;
    train_teacher(t);
  }
  ExtractOptions extract(const std::string& split) const {
    ExtractOptions x;
    x.vlm = qwen;
    x.teacher = teacher;
    x.data = data;
    x.split = split;
    x.out = tmp / ("cache-" + split);
    x.dataset.labels = "mikels8";
    x.dtype = "f32";
    x.device = "cpu";
    x.shard_size = 5;
    return x;
  }
};

World& world() {
  static World w;
  return w;
}

// Extracts two settings into dir/a and dir/b (their `out` set there) and loads both caches.
std::pair<FeatureCache, FeatureCache> extract_both(ExtractOptions& a, ExtractOptions& b, const test::TempDir& dir) {
  a.out = dir / "a";
  b.out = dir / "b";
  extract_features(a);
  extract_features(b);
  return {FeatureCache::load(a.out), FeatureCache::load(b.out)};
}

}  // namespace

TEST(Pipeline, TeacherArtifacts) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  World& w = world();
  for (const char* f : {"config.json", "model.safetensors", "classes.json", "preprocessor_config.json", "metrics.jsonl",
                        "report.json", "checkpoint.safetensors"})
    EXPECT_TRUE(file_exists(w.teacher + "/" + f)) << f;
  EXPECT_EQ(read_classes(w.teacher), LabelSet::from_spec("mikels8").labels);
  json r = eval_teacher(w.teacher, w.data, "test", [] {
    DatasetOptions d;
    d.labels = "mikels8";
    return d;
  }());
  EXPECT_EQ(r["n"].get<int64_t>(), 16);
}

TEST(Pipeline, ExtractResumesAndRefusesChangedInputs) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  World& w = world();
  ExtractOptions x = w.extract("train");
  json m = extract_features(x);
  ASSERT_TRUE(m["complete"].get<bool>());
  EXPECT_EQ(m["shards"].size(), 4u);  // 16 images in shards of 5
  FeatureCache c = FeatureCache::load(x.out);
  EXPECT_EQ(c.size(), 16);
  EXPECT_EQ(c.features.sizes(), (std::vector<int64_t>{16, Qwen2VLConfig::from_dir(w.qwen).text.hidden_size}));
  EXPECT_EQ(c.teacher_logits.size(1), 8);
  // simulate an interruption: drop the last shard from the manifest, run again, same values
  json cut = m;
  cut["shards"].erase(cut["shards"].size() - 1);
  cut["complete"] = false;
  write_file_atomic(x.out + "/manifest.json", cut.dump());
  EXPECT_THROW(FeatureCache::load(x.out), Error);
  extract_features(x);
  FeatureCache again = FeatureCache::load(x.out);
  EXPECT_TRUE(torch::equal(again.features, c.features));
  EXPECT_TRUE(torch::equal(again.vlm_scores, c.vlm_scores));
  // another setting or another image content: refused
  ExtractOptions other = x;
  other.cap_long_side = 512;
  EXPECT_THROW(extract_features(other), Error);
  test::TempDir copy;
  test::copy_tree(w.data, copy / "data");
  ExtractOptions moved = x;
  moved.data = copy / "data";
  EXPECT_THROW(extract_features(moved), Error);  // other paths
}

// --vlm-batch groups images into one left-padded VLM forward: the same values to float32 rounding
// as one image at a time, in another cache (a batched cache is its own setting).
TEST(Pipeline, BatchedExtractMatchesOneAtATime) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  World& w = world();
  ExtractOptions one = w.extract("train");
  extract_features(one);
  ExtractOptions many = one;
  many.vlm_batch = 4;
  EXPECT_THROW(extract_features(many), Error);  // not into the batch-1 cache
  test::TempDir dir;
  many.out = dir / "cache";
  extract_features(many);
  FeatureCache a = FeatureCache::load(one.out), b = FeatureCache::load(many.out);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(torch::allclose(a.features, b.features, 1e-4, 1e-5));
  EXPECT_TRUE(torch::allclose(a.vlm_scores, b.vlm_scores, 1e-4, 1e-4));
  EXPECT_TRUE(torch::equal(a.teacher_logits, b.teacher_logits));
  EXPECT_TRUE(torch::equal(a.targets, b.targets));
  ExtractOptions bad = many;
  bad.vlm_batch = 0;
  EXPECT_THROW(extract_features(bad), Error);
}

TEST(Pipeline, ExtractGenerateModeSharesThePrefill) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  // generate mode samples each answer after the same prefill that gives the label scores: the
  // scores and features are the score mode's, bit for bit
  World& w = world();
  test::TempDir dir;
  ExtractOptions score = w.extract("val"), gen = score;
  gen.vlm_mode = "generate";
  gen.max_new_tokens = 6;
  auto [a, b] = extract_both(score, gen, dir);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_TRUE(torch::equal(a.vlm_scores, b.vlm_scores));
  EXPECT_TRUE(torch::equal(a.features, b.features));
  // each image's answer is what classify --mode generate samples for it with the same seed, and
  // the cached class is that answer's
  ClassifyOptions co;
  co.vlm = w.qwen;
  co.dtype = "f32";
  co.device = "cpu";
  co.mode = "generate";
  co.max_new_tokens = gen.max_new_tokens;
  co.temperature = gen.temperature;
  co.seed = gen.seed;
  VlmClassifier classifier(co);
  ASSERT_EQ(b.vlm_text.size(), static_cast<size_t>(b.size()));
  std::vector<json> answers;
  classifier.classify(b.paths, [&](const json& r) { answers.push_back(r); });
  ASSERT_EQ(answers.size(), b.vlm_text.size());
  for (int64_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(b.vlm_text[i], answers[i]["answer"].get<std::string>()) << b.paths[i];
    EXPECT_EQ(b.vlm_answer[i].item<int64_t>(), parse_categorical_answer(b.vlm_text[i], classifier.labels()).index);
  }
  ExtractOptions graph = gen;  // fixed-shape decoding is a setting of its own
  graph.cuda_graph = true;
  EXPECT_THROW(extract_features(graph), Error);
}

TEST(Pipeline, ExtractTeacherInBf16) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  // --teacher-dtype bf16: the teacher under autocast; its logits within bf16 rounding of float32's,
  // everything else the same, and a cache of its own
  World& w = world();
  test::TempDir dir;
  ExtractOptions f32 = w.extract("test"), bf16 = f32;
  bf16.teacher_dtype = "bf16";
  auto [a, b] = extract_both(f32, bf16, dir);
  EXPECT_TRUE(torch::equal(a.vlm_scores, b.vlm_scores));
  EXPECT_FALSE(torch::equal(a.teacher_logits, b.teacher_logits));  // autocast did run
  const double scale = a.teacher_logits.abs().max().item<double>();
  EXPECT_LT((a.teacher_logits - b.teacher_logits).abs().max().item<double>(), 0.05 * scale);
  ExtractOptions into = bf16;
  into.out = f32.out;
  EXPECT_THROW(extract_features(into), Error);  // not into the float32 cache
  ExtractOptions bad = f32;
  bad.teacher_dtype = "fp8";
  EXPECT_THROW(extract_features(bad), Error);
}

TEST(Pipeline, StagesEvaluateAndPredict) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  World& w = world();
  for (const char* split : {"train", "val", "test"}) extract_features(w.extract(split));
  DistillOptions d;
  d.cache = w.extract("train").out;
  d.val_cache = w.extract("val").out;
  d.out = w.tmp / "distill";
  d.hidden = {32};
  d.epochs = 3;
  d.batch_size = 4;
  // float32 matmuls in the head, so that the batched prediction below is compared to float
  // rounding: a bf16 head (the default) rounds its input to 8 significant bits, and two features
  // a float rounding apart can land on bf16 values 2^-8 apart (gate probabilities 1e-4 apart,
  // seen on pip torch 2.11 with MKL)
  d.compute_dtype = "f32";
  json dr = train_distill_head(d);
  const int64_t hidden = Qwen2VLConfig::from_dir(w.qwen).text.hidden_size;
  EXPECT_EQ(dr["config"]["parameters"].get<int64_t>(), hidden * 32 + 32 + 32 * 8 + 8);
  const int64_t n_train = FeatureCache::load(d.cache).size();
  EXPECT_EQ(dr["optimizer_steps"].get<int64_t>(), 3 * ((n_train + 3) / 4));  // (and a warning: so few)
  GateOptions g;
  g.cache = d.cache;
  g.val_cache = d.val_cache;
  g.distill = d.out;
  g.out = w.tmp / "gate";
  g.epochs = 3;
  json gr = train_gate(g);
  EXPECT_EQ(gr["config"]["parameters"].get<int64_t>(), 136);
  EvaluateOptions e;
  e.cache = w.extract("test").out;
  e.distill = d.out;
  e.gate = g.out;
  e.out = w.tmp / "eval";
  json rep = evaluate_cache(e);
  for (const char* m : {"vlm", "teacher", "distill_head", "emovlm_kd"}) {
    ASSERT_TRUE(rep["models"].contains(m)) << m;
    EXPECT_EQ(rep["models"][m]["n"].get<int64_t>(), 16) << m;
  }
  {
    // the complementarity counts of the cached answers, image by image
    FeatureCache tc = FeatureCache::load(e.cache);
    std::map<std::string, int64_t> want = {{"both_right", 0}, {"only_vlm", 0}, {"only_teacher", 0}, {"both_wrong", 0}};
    for (int64_t i = 0; i < tc.size(); ++i) {
      const int64_t t = tc.targets[i].item<int64_t>();
      const bool v = tc.vlm_answer[i].item<int64_t>() == t, te = tc.teacher_logits[i].argmax().item<int64_t>() == t;
      ++want[v && te ? "both_right" : v ? "only_vlm" : te ? "only_teacher" : "both_wrong"];
    }
    for (const auto& [k, n] : want) EXPECT_EQ(rep["complementarity"]["vlm_vs_teacher"][k].get<int64_t>(), n) << k;
  }
  EXPECT_TRUE(file_exists(e.out + "/report.md"));
  // splits that share images are reported: none here; all of them when the "test" cache is the training one
  EXPECT_EQ(dr["val_images_in_training"].get<int64_t>(), 0);
  EXPECT_EQ(gr["val_images_in_training"].get<int64_t>(), 0);
  EXPECT_EQ(rep["test_images_in_training"].get<int64_t>(), 0);
  EvaluateOptions on_train = e;
  on_train.cache = d.cache;
  on_train.out.clear();
  EXPECT_EQ(evaluate_cache(on_train)["test_images_in_training"].get<int64_t>(), FeatureCache::load(d.cache).size());
  // the bundle predicts the same emotion as the cached pipeline for a test image
  BundleSpec b;
  b.vlm = w.qwen;
  b.distill = d.out;
  b.gate = g.out;
  b.dtype = "f32";
  write_bundle(w.tmp / "bundle", b);
  Predictor p(w.tmp / "bundle", "cpu");
  FeatureCache test = FeatureCache::load(e.cache);
  json r = p.predict(test.paths[3]);
  DistillHead head = load_distill_head(d.out);
  Gate gate = load_gate(g.out);
  torch::NoGradGuard ng;
  torch::Tensor hl = head->forward(test.features.narrow(0, 3, 1));
  int64_t want = gate->forward(test.vlm_input("onehot").narrow(0, 3, 1), hl).argmax(-1).item<int64_t>();
  EXPECT_EQ(r["emotion"].get<std::string>(), test.labels[want]);
  EXPECT_EQ(r["head_top3"].size(), 3u);
  // several images (different sizes) in one padded VLM forward: each as predict() gives it, to
  // float rounding; each alone (deterministic): exactly; a missing file: an error in its place
  std::vector<std::string> paths = {test.paths[0], test.paths[5], w.tmp / "missing.png", test.paths[9]};
  std::vector<json> batched = p.predict_batch(paths, false), alone = p.predict_batch(paths, true);
  ASSERT_EQ(batched.size(), 4u);
  EXPECT_NE(batched[2]["error"].get<std::string>().find("missing.png"), std::string::npos);
  EXPECT_TRUE(alone[2].contains("error"));
  for (size_t i : {0u, 1u, 3u}) {
    json one = p.predict(paths[i]);
    EXPECT_EQ(alone[i], one) << paths[i];
    EXPECT_EQ(batched[i]["emotion"], one["emotion"]) << paths[i];
    for (const auto& [label, prob] : one["gate"]["probabilities"].items())
      EXPECT_NEAR(batched[i]["gate"]["probabilities"][label].get<double>(), prob.get<double>(), 1e-4)
          << label << "\nbatched: " << batched[i].dump() << "\nalone: " << one.dump();
  }
  // the bundle on the test split from the images: the metrics the cached evaluation gives
  DatasetOptions ds;
  ds.labels = "mikels8";
  const std::string journal = w.tmp / "bundle-eval.partial.jsonl";
  int results = 0;
  json be = evaluate_bundle(p, w.data, "test", ds, 3, [&](const json&) { ++results; }, journal);
  EXPECT_EQ(results, 16);
  EXPECT_EQ(be["images"].get<int64_t>(), 16);
  EXPECT_EQ(be["unreadable"].get<int64_t>(), 0);
  ASSERT_EQ(be["predictions"].size(), 16u);
  for (const auto& [model, key] : {std::pair<const char*, const char*>{"vlm", "vlm"}, {"distill_head", "head"}, {"emovlm_kd", "emotion"}}) {
    int right = 0;
    for (const json& row : be["predictions"]) right += row[key] == row["truth"];
    EXPECT_DOUBLE_EQ(be["models"][model]["accuracy"].get<double>(), right / 16.0) << model;
    EXPECT_DOUBLE_EQ(be["models"][model]["accuracy"].get<double>(), rep["models"][model]["accuracy"].get<double>()) << model;
  }
  {
    std::map<std::string, int64_t> want = {{"both_right", 0}, {"only_vlm", 0}, {"only_head", 0}, {"both_wrong", 0}};
    for (const json& row : be["predictions"]) {
      const bool v = row["vlm"] == row["truth"], h = row["head"] == row["truth"];
      ++want[v && h ? "both_right" : v ? "only_vlm" : h ? "only_head" : "both_wrong"];
    }
    for (const auto& [k, n] : want) EXPECT_EQ(be["complementarity"]["vlm_vs_head"][k].get<int64_t>(), n) << k;
  }
  // again with the same journal: every result read back, nothing computed
  results = 0;
  json again = evaluate_bundle(p, w.data, "test", ds, 3, [&](const json&) { ++results; }, journal);
  EXPECT_EQ(results, 0);
  EXPECT_EQ(again["resumed"].get<int64_t>(), 16);
  EXPECT_EQ(again["models"], be["models"]);
}

namespace {

// A small bundle at `out` for the server tests: the head and the gate trained one epoch each on
// the world's training cache, float32 matmuls in the head (results compared to float rounding; a
// bf16 head rounds its input). Returns that cache.
std::string small_bundle(World& w, const std::string& out) {
  extract_features(w.extract("train"));
  DistillOptions d;
  d.cache = w.extract("train").out;
  d.out = out + "-distill";
  d.hidden = {16};
  d.epochs = 1;
  d.compute_dtype = "f32";
  train_distill_head(d);
  GateOptions g;
  g.cache = d.cache;
  g.distill = d.out;
  g.out = out + "-gate";
  g.epochs = 1;
  train_gate(g);
  BundleSpec b;
  b.vlm = w.qwen;
  b.distill = d.out;
  b.gate = g.out;
  b.dtype = "f32";
  write_bundle(out, b);
  return d.cache;
}

#if defined(EMOVLM_HAVE_HTTP)
// A server on a free loopback port, run on a thread of its own, stopped however the test ends.
struct Serving {
  PredictionServer server;
  int port;
  std::thread thread;
  Serving(Predictor& p, const ServeOptions& o) : server(p, o), port(server.bind()), thread([this] { server.run(); }) {}
  ~Serving() {
    server.stop();
    thread.join();
  }
};
#endif

}  // namespace

TEST(Pipeline, ServesPredictionsOverHttp) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  World& w = world();
  test::TempDir dir;
  const std::string cache = small_bundle(w, dir / "bundle");
  Predictor p(dir / "bundle", "cpu");
  ServeOptions o;
  o.port = 0;
  o.max_bytes = 64 << 10;
  if (!http_server_available()) {
    EXPECT_THROW((PredictionServer{p, o}), Error);  // said so, not a silent no-op
    (void)o;
    return;
  }
#if defined(EMOVLM_HAVE_HTTP)
  Serving serving(p, o);
  httplib::Client client("127.0.0.1", serving.port);
  client.set_read_timeout(60, 0);
  auto health = client.Get("/health");
  ASSERT_TRUE(health) << "no answer from the server";
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["labels"], json(p.labels()));
  // an image's bytes as the body, and as a multipart upload: what predict() gives for its file
  const std::string path = FeatureCache::load(cache).paths[2];
  json want = p.predict(path);
  const std::string bytes = read_file(path);
  auto raw = client.Post("/predict", bytes, "image/png");
  ASSERT_TRUE(raw);
  ASSERT_EQ(raw->status, 200) << raw->body;
  json got = json::parse(raw->body);
  EXPECT_EQ(got["image"], "request");
  got["image"] = want["image"];
  EXPECT_EQ(got, want);
  httplib::MultipartFormDataItems items = {{"image", bytes, "photo.png", "image/png"}};
  auto form = client.Post("/predict", items);
  ASSERT_TRUE(form);
  ASSERT_EQ(form->status, 200) << form->body;
  json up = json::parse(form->body);
  EXPECT_EQ(up["image"], "photo.png");
  EXPECT_EQ(up["emotion"], want["emotion"]);
  // not an image; too large; no such endpoint: errors in JSON, and the server goes on
  auto bad = client.Post("/predict", std::string("not an image"), "image/png");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_NE(json::parse(bad->body)["error"].get<std::string>().find("request"), std::string::npos);
  auto big = client.Post("/predict", std::string(100 << 10, 'x'), "image/png");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  auto none = client.Get("/nothing");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 404);
  auto again = client.Post("/predict", bytes, "image/png");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
#endif
}

TEST(Pipeline, ServerBatchesRequestsThatArriveTogether) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  World& w = world();
  test::TempDir dir;
  const std::string cache = small_bundle(w, dir / "bundle");
  if (!http_server_available()) GTEST_SKIP() << "this build has no HTTP server (checked in ServesPredictionsOverHttp)";
#if defined(EMOVLM_HAVE_HTTP)
  Predictor p(dir / "bundle", "cpu");
  ServeOptions o;
  o.port = 0;
  o.batch = 4;
  o.batch_wait_ms = 1000;  // long enough that four requests sent at once share a batch
  Serving serving(p, o);
  const int port = serving.port;
  const std::vector<std::string> paths = FeatureCache::load(cache).paths;  // images of different sizes
  std::vector<json> got(4);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < 4; ++i)
    clients.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(60, 0);
      httplib::MultipartFormDataItems items = {{"image", read_file(paths[i]), paths[i], "image/png"}};
      auto r = c.Post("/predict", items);
      got[i] = r && r->status == 200 ? json::parse(r->body) : json{{"failed", r ? r->status : -1}};
    });
  for (auto& t : clients) t.join();
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(got[i].contains("emotion")) << got[i].dump();
    json want = p.predict(paths[i]);
    EXPECT_EQ(got[i]["image"], paths[i]);
    EXPECT_EQ(got[i]["emotion"], want["emotion"]) << paths[i];
    for (const auto& [label, prob] : want["gate"]["probabilities"].items())
      EXPECT_NEAR(got[i]["gate"]["probabilities"][label].get<double>(), prob.get<double>(), 1e-4) << label;
  }
  httplib::Client c("127.0.0.1", port);
  json health = json::parse(c.Get("/health")->body);
  EXPECT_EQ(health["requests"].get<int64_t>(), 4);
  EXPECT_LT(health["batches"].get<int64_t>(), 4);  // some requests shared a forward
#endif
}

TEST(Pipeline, AblationWritesTableJsonAndPlot) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  World& w = world();
  for (const char* split : {"train", "test"}) extract_features(w.extract(split));
  AblationOptions a;
  a.kind = "gate";
  a.values = {"concat", "dynamic"};
  a.train_cache = w.extract("train").out;
  a.test_cache = w.extract("test").out;
  a.out = w.tmp / "ablate-gate";
  a.distill_epochs = 2;
  a.gate_epochs = 2;
  json r = run_ablation(a);
  ASSERT_EQ(r["rows"].size(), 2u);
  EXPECT_EQ(r["rows"][1]["gate"], "dynamic");
  for (const char* f : {"ablation.md", "ablation.json", "ablation.png"}) EXPECT_TRUE(file_exists(a.out + "/" + f)) << f;
  EXPECT_EQ(decode_image_file(a.out + "/ablation.png").width, 640);
}

// A training run killed with SIGKILL and resumed ends with the same weights as an uninterrupted run.
TEST(Pipeline, ResumeAfterSigkillIsExact) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  World& w = world();
  extract_features(w.extract("train"));
  const std::string cache = w.extract("train").out;
  auto run = [&](const std::string& out, bool resume) {
    std::vector<std::string> args = {EMOVLM_CLI_PATH, "--threads", "1", "-q", "distill", "--cache", cache, "--out", out,
                                     "--hidden", "512,512", "--epochs", "60", "--batch-size", "1", "--save-every", "7"};
    if (resume) args.push_back("--resume");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    EXPECT_EQ(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    return pid;
  };
  auto wait_ok = [](pid_t pid) {
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  };
  const std::string full = w.tmp / "kd-full", killed = w.tmp / "kd-killed";
  ASSERT_TRUE(wait_ok(run(full, false)));
  pid_t pid = run(killed, false);
  // kill it once it has checkpointed mid-run
  const std::string ck = killed + "/checkpoint.safetensors";
  bool killed_midway = false;
  for (int i = 0; i < 6000 && !killed_midway; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (file_exists(ck)) {
      kill(pid, SIGKILL);
      killed_midway = true;
    }
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(killed_midway);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
  ASSERT_FALSE(file_exists(killed + "/head.safetensors"));
  ASSERT_TRUE(wait_ok(run(killed, true)));
  auto a = load_tensors(full + "/head.safetensors"), b = load_tensors(killed + "/head.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, v] : a) EXPECT_TRUE(torch::equal(v, b.at(k))) << k;
}
