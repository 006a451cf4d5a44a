// The pipeline end to end on the tiny reference models and a generated dataset: teacher training,
// the feature cache (resume and refusal), stages 2 and 3, evaluation, bundle and prediction; and
// exact resume of a training run killed with SIGKILL.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/labels.h"
#include "emovlm/data/metrics.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/models/qwen2vl_config.h"
#include "emovlm/pipeline/ablation.h"
#include "emovlm/pipeline/classify.h"
#include "emovlm/pipeline/evaluate.h"
#include "emovlm/pipeline/extract.h"
#include "emovlm/pipeline/plot.h"
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
            p[2] =
                static_cast<uint8_t>((x * y + k * 17 + 101 * si) % 256);  // no image in two splits
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
    x.dtype = ComputeDtype::f32;
    x.device = ComputeDevice::cpu();
    x.shard_size = 5;
    return x;
  }
};

World& world() {
  static World w;
  return w;
}

// Extracts two settings into dir/a and dir/b (their `out` set there) and loads both caches.
std::pair<FeatureCache, FeatureCache> extract_both(ExtractOptions& a, ExtractOptions& b,
                                                   const test::TempDir& dir) {
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
  for (const char* f :
       {"config.json", "model.safetensors", "classes.json", "preprocessor_config.json",
        "metrics.jsonl", "report.json", "checkpoint.safetensors"})
    EXPECT_TRUE(file_exists(w.teacher + "/" + f)) << f;
  EXPECT_EQ(read_classes(w.teacher), LabelSet::from_spec("mikels8").labels);
  json r = evaluate_teacher(w.teacher, w.data, "test", [] {
    DatasetOptions d;
    d.labels = "mikels8";
    return d;
  }());
  test::expect_evaluation_shape(r, {"teacher"}, true);
  EXPECT_EQ(r["images"].get<int64_t>(), 16);
  EXPECT_EQ(r["models"]["teacher"]["n"].get<int64_t>(), 16);
  EXPECT_EQ(r["models"]["teacher"]["parameters"].get<int64_t>(),
            load_image_classifier(w.teacher)->num_parameters());
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
  EXPECT_EQ(c.features.sizes(),
            (std::vector<int64_t>{16, Qwen2VLConfig::from_dir(w.qwen).text.hidden_size}));
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
  // another setting: refused, naming the field and both values
  ExtractOptions other = x;
  other.cap_long_side = 512;
  try {
    extract_features(other);
    ADD_FAILURE() << "a cache of other settings was reused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/cap_long_side: 1024 (now 512)"), std::string::npos)
        << e.what();
  }
  // the same images elsewhere (the dataset moved): the same cache, its paths now the new ones
  test::TempDir copy;
  test::copy_tree(w.data, copy / "data");
  ExtractOptions moved = x;
  moved.data = copy / "data";
  extract_features(moved);
  FeatureCache at_copy = FeatureCache::load(x.out);
  EXPECT_TRUE(torch::equal(at_copy.features, c.features));
  EXPECT_EQ(at_copy.paths[0].rfind(copy.path(), 0), 0u) << at_copy.paths[0];
  // another image content: refused, naming the entry
  const std::string changed = FeatureCache::load(x.out).paths[3];
  test::write_test_image(changed, 40, 36, 7);
  try {
    extract_features(moved);
    ADD_FAILURE() << "a cache of other images was reused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[label, content hash] at /"), std::string::npos)
        << e.what();
  }
}

// A cache folder moved or copied elsewhere loads (its image paths relative to it) and resumes
// there; the same cache asked for with another spelling of its inputs is the same cache.
TEST(Pipeline, CacheMovedAndRespelledResumes) {
  World& w = world();
  ExtractOptions x = w.extract("val");
  extract_features(x);
  const FeatureCache before = FeatureCache::load(x.out);
  test::TempDir dir;
  make_dirs(dir / "elsewhere");
  test::copy_tree(x.out, dir / "elsewhere/cache");
  const FeatureCache moved = FeatureCache::load(dir / "elsewhere/cache");
  EXPECT_EQ(moved.paths, before.paths);  // resolved to the same images
  EXPECT_TRUE(torch::equal(moved.features, before.features));
  // a kill after the first shard, at the new place: resumed from another spelling of every input
  json m = read_json_file(dir / "elsewhere/cache/manifest.json");
  m["shards"] = json::array({m["shards"][0]});
  m["complete"] = false;
  write_file_atomic(dir / "elsewhere/cache/manifest.json", m.dump());
  write_file_atomic(dir / "elsewhere/cache/.shard-00001.safetensors.tmp.Ab12Cd", "a killed write");
  ExtractOptions again = x;
  again.out = dir / "elsewhere/./cache";
  again.data = w.data + "/./";
  again.teacher = w.teacher + "/../" + fs::path(w.teacher).filename().string();
  json done = extract_features(again);
  EXPECT_TRUE(done["complete"].get<bool>());
  EXPECT_FALSE(file_exists(dir / "elsewhere/cache/.shard-00001.safetensors.tmp.Ab12Cd"));
  const FeatureCache resumed = FeatureCache::load(dir / "elsewhere/cache");
  EXPECT_TRUE(torch::equal(resumed.features, before.features));
  EXPECT_TRUE(torch::equal(resumed.vlm_scores, before.vlm_scores));
}

// Each shard names its split and inputs: a shard of another extraction in a cache is refused.
TEST(Pipeline, ShardOfAnotherExtractionIsRefused) {
  World& w = world();
  extract_features(w.extract("val"));
  extract_features(w.extract("test"));
  test::TempDir dir;
  test::copy_tree(w.extract("test").out, dir / "test");
  fs::copy_file(w.extract("val").out + "/shard-00000.safetensors",
                dir / "test/shard-00000.safetensors", fs::copy_options::overwrite_existing);
  try {
    FeatureCache::load(dir / "test");
    ADD_FAILURE() << "a shard of the val split was read as the test split's";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("belongs to another extraction (split val"),
              std::string::npos)
        << e.what();
  }
}

// A shard whose tensors disagree with each other or with the manifest's labels is refused when the
// cache is read, naming the shard and the tensor, instead of reaching a loss or an index op.
TEST(Pipeline, CorruptShardsAreRefusedNamingTheTensor) {
  World& w = world();
  extract_features(w.extract("test"));
  const int64_t classes =
      static_cast<int64_t>(FeatureCache::load(w.extract("test").out).labels.size());
  struct Case {
    std::string what, tensor;
    std::function<void(std::map<std::string, torch::Tensor>&)> corrupt;
  };
  const Case cases[] = {
      {"a label past the last class", "labels", [&](auto& ts) { ts["labels"][0] = classes + 91; }},
      {"a negative label", "labels", [](auto& ts) { ts["labels"][0] = -1; }},
      {"an answer past the last class", "vlm_answer",
       [&](auto& ts) { ts["vlm_answer"][0] = classes; }},
      {"one feature row short", "features",
       [](auto& ts) { ts["features"] = ts["features"].narrow(0, 1, ts["features"].size(0) - 1); }},
      {"scores of another label set", "vlm_scores",
       [&](auto& ts) {
         ts["vlm_scores"] = torch::zeros({ts["index"].size(0), classes + 1});
       }},
      {"float labels", "labels", [](auto& ts) { ts["labels"] = ts["labels"].to(torch::kFloat32); }},
  };
  for (const auto& c : cases) {
    test::TempDir dir;
    test::copy_tree(w.extract("test").out, dir / "test");
    const std::string shard = dir / "test/shard-00000.safetensors";
    const auto meta = Checkpoint(shard).metadata();
    std::map<std::string, torch::Tensor> ts;
    for (auto& [k, v] : load_tensors(shard)) ts[k] = v.clone();
    c.corrupt(ts);
    save_tensors(shard, ts, meta);
    try {
      FeatureCache::load(dir / "test");
      ADD_FAILURE() << c.what << " was read";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("shard-00000.safetensors: tensor '" + c.tensor + "'"), std::string::npos)
          << c.what << ": " << msg;
    }
  }
}

// A head or gate file whose configuration is out of range or of the wrong type is refused naming
// the file and the field, before a module of that size is built.
TEST(Pipeline, CorruptHeadAndGateConfigsAreRefused) {
  test::TempDir dir;
  const json head = {{"in_dim", 64}, {"hidden", {32}}, {"num_classes", 8}, {"dropout", 0.1}};
  struct Case {
    std::string pointer;
    json value;
    std::string field;
  };
  const Case head_cases[] = {{"/in_dim", -1, "in_dim"},
                             {"/in_dim", int64_t{1} << 40, "in_dim"},
                             {"/hidden/0", 0, "hidden[0]"},
                             {"/num_classes", 0, "num_classes"},
                             {"/num_classes", "eight", "num_classes"},
                             {"/dropout", 1.5, "dropout"}};
  for (const auto& c : head_cases) {
    json bad = head;
    bad[json::json_pointer(c.pointer)] = c.value;
    const std::string path = dir / "head.safetensors";
    save_tensors(path, NamedTensors{}, {{"emovlm.head", bad.dump()}});
    try {
      DistillHeadImpl::from_pretrained(path);
      ADD_FAILURE() << c.pointer << " = " << c.value.dump() << " was accepted";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(c.field), std::string::npos) << msg;
    }
  }
  const std::string gate = dir / "gate.safetensors";
  save_tensors(gate, NamedTensors{},
               {{"emovlm.gate", json({{"kind", "mlp"}, {"num_classes", -3}}).dump()}});
  try {
    GateImpl::from_pretrained(gate);
    ADD_FAILURE() << "a gate of -3 classes was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_classes"), std::string::npos) << e.what();
  }
  save_tensors(gate, NamedTensors{}, {{"emovlm.gate", "[1e999"}});
  try {
    GateImpl::from_pretrained(gate);
    ADD_FAILURE() << "metadata that is not JSON was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metadata emovlm.gate is not valid"), std::string::npos)
        << e.what();
  }
}

// Nothing read is an error, not an empty success: a manifest none of whose images can be read
// stops the teacher and the extraction at once, naming the manifest and the files.
TEST(Pipeline, AnUnreadableSplitIsAnError) {
  World& w = world();
  test::TempDir dir;
  std::string lines;
  for (const auto& l : LabelSet::from_spec("mikels8").labels)
    for (const char* split : {"train", "val", "test"})
      lines += json({{"path", cat("gone/", split, "-", l, ".png")}, {"label", l}, {"split", split}})
                   .dump() +
               "\n";
  write_file_atomic(dir / "bad.jsonl", lines);
  TeacherOptions t;
  t.data = dir / "bad.jsonl";
  t.init = test::ref_path("vit_tiny");
  t.out = dir / "teacher";
  t.epochs = 1;
  try {
    train_teacher(t);
    ADD_FAILURE() << "a teacher was trained on nothing";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "bad.jsonl: none of the 8 images of the train split could be read"),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("gone/train-amusement.png"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(file_exists(dir / "teacher/model.safetensors"));
  ExtractOptions x = w.extract("test");
  x.data = dir / "bad.jsonl";
  x.out = dir / "cache";
  EXPECT_THROW(extract_features(x), Error);
  // files that exist but do not decode: found when read, the same error
  std::string garbage;
  for (const auto& l : LabelSet::from_spec("mikels8").labels) {
    write_file_atomic(dir / ("junk-" + l + ".png"), "not an image");
    for (const char* split : {"train", "test"})
      garbage +=
          json({{"path", "junk-" + l + ".png"}, {"label", l}, {"split", split}}).dump() + "\n";
  }
  write_file_atomic(dir / "junk.jsonl", garbage);
  t.data = dir / "junk.jsonl";
  EXPECT_THROW(train_teacher(t), Error);
  EXPECT_FALSE(file_exists(dir / "teacher/model.safetensors"));
  x.data = dir / "junk.jsonl";
  try {
    extract_features(x);
    ADD_FAILURE() << "a cache of nothing was made";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("none of the 8 images of the test split could be read"),
              std::string::npos)
        << e.what();
  }
}

// A ResNet teacher (the paper's Table 1 baseline) from a timm checkpoint: trained with its running
// statistics saved, evaluated as a Table 1 row, cached by extract as the ViT is (its logits,
// computed on timm's preprocessing), and distilled from and evaluated without a change.
TEST(Pipeline, ResNetTeacherTrainsCachesAndDistills) {
  World& w = world();
  const std::string init = std::string(EMOVLM_TEST_DATA_DIR) + "/cnn/resnet_tiny";
  TeacherOptions t;
  t.data = w.data;
  t.init = init;
  t.arch = "resnet50";
  t.preprocess = "checkpoint";
  t.out = w.tmp / "resnet-teacher";
  t.dataset.labels = "mikels8";
  t.epochs = 1;
  t.batch_size = 4;
  t.optim.lr = 1e-3;
  t.device = ComputeDevice::cpu();
  TeacherOptions wrong = t;
  wrong.arch = "vgg16";
  EXPECT_THROW(train_teacher(wrong), Error);  // --init holds a resnet50
  json tr = train_teacher(t);
  EXPECT_EQ(tr["arch"], "resnet50");
  EXPECT_EQ(tr["image"]["input_size"], json({3, 64, 64}));  // the checkpoint's pretrained_cfg
  // the teacher directory is a timm checkpoint again (8 classes), with the running statistics that
  // training moved (train mode) saved next to the weights
  const json cfg = read_json_file(t.out + "/config.json");
  EXPECT_EQ(cfg["num_classes"], 8);
  EXPECT_EQ(cfg["pretrained_cfg"]["crop_pct"], 0.875);
  auto before = load_tensors(init + "/model.safetensors"),
       after = load_tensors(t.out + "/model.safetensors");
  EXPECT_FALSE(torch::equal(before.at("bn1.running_mean"), after.at("bn1.running_mean")));
  EXPECT_GT(after.at("bn1.num_batches_tracked").item<int64_t>(),
            before.at("bn1.num_batches_tracked").item<int64_t>());
  DatasetOptions ds;
  ds.labels = "mikels8";
  json ev = evaluate_teacher(t.out, w.data, "test", ds, 8, 2, ComputeDevice::cpu());
  const json& teacher = ev["models"]["teacher"];
  EXPECT_EQ(teacher["n"].get<int64_t>(), 16);
  EXPECT_EQ(ev["arch"], "resnet50");
  EXPECT_EQ(teacher["arch"], "resnet50");
  EXPECT_EQ(teacher["parameters"].get<int64_t>(), load_image_classifier(t.out)->num_parameters());
  const std::string row = models_table_markdown({{classifier_display_name(ev["arch"]), teacher}});
  EXPECT_NE(row.find("| ResNet50 |"), std::string::npos) << row;
  EXPECT_NE(row.find("macro-F1 %"), std::string::npos) << row;

  std::vector<std::string> caches;
  for (const char* split : {"train", "test"}) {
    ExtractOptions x = w.extract(split);
    x.teacher = t.out;
    x.out = w.tmp / (std::string("resnet-cache-") + split);
    extract_features(x);
    caches.push_back(x.out);
  }
  FeatureCache train = FeatureCache::load(caches[0]);
  ASSERT_EQ(train.teacher_logits.sizes(), (std::vector<int64_t>{16, 8}));
  {
    // the cached logits are the ResNet's on timm's eval transform of the image
    std::shared_ptr<ImageClassifierImpl> teacher = load_image_classifier(t.out);
    teacher->eval();
    torch::NoGradGuard ng;
    FloatArray px =
        preprocess_vit(decode_image_file(train.paths[5]), classifier_image_config(t.out));
    EXPECT_EQ(px.shape, (std::vector<int64_t>{3, 64, 64}));
    torch::Tensor direct = teacher->logits(to_tensor(px).unsqueeze(0))[0];
    EXPECT_LT((direct - train.teacher_logits[5]).abs().max().item<double>(),
              1e-4 * direct.abs().max().item<double>());
  }
  DistillOptions d;
  d.cache = caches[0];
  d.out = w.tmp / "resnet-distill";
  d.hidden = {16};
  d.epochs = 2;
  d.batch_size = 4;
  json dr = train_distill_head(d);
  EXPECT_GT(dr["optimizer_steps"].get<int64_t>(), 0);
  EvaluateOptions e;
  e.cache = caches[1];
  e.distill = d.out;
  json rep = evaluate_cache(e);
  EXPECT_EQ(rep["models"]["teacher"]["arch"], "resnet50");
  // parameters, not the BatchNorm statistics the checkpoint also holds
  EXPECT_EQ(rep["models"]["teacher"]["parameters"], teacher["parameters"]);
  EXPECT_NE(evaluation_markdown(rep).find("| Teacher (ResNet50) |"), std::string::npos)
      << evaluation_markdown(rep);
}

// A VGG16-BN teacher with the default transform, the reference script's (Resize + CenterCrop,
// mean = std = 0.5) instead of the checkpoint's, recorded in the trained directory's pretrained_cfg
// so that eval and extract use it; evaluated as a Table 1 row.
TEST(Pipeline, VggTeacherWithTheReferenceTransform) {
  World& w = world();
  TeacherOptions t;
  t.data = w.data;
  t.init = std::string(EMOVLM_TEST_DATA_DIR) + "/cnn/vgg_bn_tiny";
  t.arch = "vgg16_bn";
  EXPECT_EQ(t.preprocess, "reference");
  t.image_size = 40;
  t.out = w.tmp / "vgg-teacher";
  t.dataset.labels = "mikels8";
  t.epochs = 1;
  t.batch_size = 4;
  t.optim.lr = 1e-3;
  t.device = ComputeDevice::cpu();
  json tr = train_teacher(t);
  EXPECT_EQ(tr["arch"], "vgg16_bn");
  EXPECT_EQ(tr["image"]["input_size"], json({3, 40, 40}));
  EXPECT_EQ(tr["image"]["mean"], json({0.5, 0.5, 0.5}));
  EXPECT_EQ(tr["image"]["crop_pct"], 1.0);
  const VitImageConfig img = classifier_image_config(t.out);
  EXPECT_EQ(img.image_size, 40);
  EXPECT_EQ(img.resize_size(), 40);
  EXPECT_EQ(img.image_std[1], 0.5f);
  auto before = load_tensors(t.init + "/model.safetensors"),
       after = load_tensors(t.out + "/model.safetensors");
  EXPECT_FALSE(
      torch::equal(before.at("features.1.running_var"), after.at("features.1.running_var")));
  TeacherOptions bad = t;
  bad.preprocess = "timm";
  EXPECT_THROW(train_teacher(bad), Error);
  DatasetOptions ds;
  ds.labels = "mikels8";
  json ev = evaluate_teacher(t.out, w.data, "test", ds, 8, 2, ComputeDevice::cpu());
  test::expect_evaluation_shape(ev, {"teacher"}, true);
  const json& teacher = ev["models"]["teacher"];
  EXPECT_EQ(teacher["n"].get<int64_t>(), 16);
  EXPECT_EQ(teacher["parameters"].get<int64_t>(), load_image_classifier(t.out)->num_parameters());
  const std::string row =
      models_table_markdown({{teacher["display_name"].get<std::string>(), teacher}});
  EXPECT_NE(row.find("| VGG16-BN |"), std::string::npos) << row;
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
  co.dtype = ComputeDtype::f32;
  co.device = ComputeDevice::cpu();
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
    EXPECT_EQ(b.vlm_answer[i].item<int64_t>(),
              parse_categorical_answer(b.vlm_text[i], classifier.labels()).index);
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
  bf16.teacher_dtype = ComputeDtype::bf16;
  auto [a, b] = extract_both(f32, bf16, dir);
  EXPECT_TRUE(torch::equal(a.vlm_scores, b.vlm_scores));
  EXPECT_FALSE(torch::equal(a.teacher_logits, b.teacher_logits));  // autocast did run
  const double scale = a.teacher_logits.abs().max().item<double>();
  EXPECT_LT((a.teacher_logits - b.teacher_logits).abs().max().item<double>(), 0.05 * scale);
  ExtractOptions into = bf16;
  into.out = f32.out;
  EXPECT_THROW(extract_features(into), Error);  // not into the float32 cache
  ExtractOptions bad = f32;
  bad.teacher_dtype = ComputeDtype::f16;  // the teacher computes in f32 or bf16 only
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
  d.compute_dtype = ComputeDtype::f32;
  json dr = train_distill_head(d);
  const int64_t hidden = Qwen2VLConfig::from_dir(w.qwen).text.hidden_size;
  EXPECT_EQ(dr["config"]["parameters"].get<int64_t>(), hidden * 32 + 32 + 32 * 8 + 8);
  const int64_t n_train = FeatureCache::load(d.cache).size();
  // --epochs 3 is raised to the step budget's epochs (at least 2,000 optimizer steps); early
  // stopping on the validation cache may end the run before them
  // (at most 100 epochs, each then several passes over the cache)
  const int64_t per_pass = (n_train + 3) / 4;
  const int64_t passes_needed = std::max<int64_t>(3, (d.min_steps + per_pass - 1) / per_pass);
  const int64_t epochs = dr["epochs"].get<int64_t>(),
                passes = dr["passes_per_epoch"].get<int64_t>();
  EXPECT_LE(epochs, 100);
  EXPECT_GE(epochs * passes, passes_needed);
  EXPECT_LT((epochs - 1) * passes, passes_needed);
  EXPECT_EQ(dr["planned_optimizer_steps"].get<int64_t>(), epochs * passes * per_pass);
  EXPECT_EQ(dr["optimizer_steps"].get<int64_t>(),
            dr["epochs_run"].get<int64_t>() * passes * per_pass);
  EXPECT_EQ(dr["stopped_early"].get<bool>(), dr["epochs_run"].get<int64_t>() < epochs);
  GateOptions g;
  g.cache = d.cache;
  g.val_cache = d.val_cache;
  g.distill = d.out;
  g.out = w.tmp / "gate";
  g.epochs = 3;
  g.fit_on = "crossfit";
  json gr = train_gate(g);
  EXPECT_EQ(gr["config"]["parameters"].get<int64_t>(), 136);
  // the cross-fit: out-of-fold head outputs from 5 heads trained like the given one
  EXPECT_EQ(gr["config"]["fit_on"], "crossfit");
  for (int k = 1; k <= 5; ++k) {
    const json fold = read_json_file(g.out + cat("/crossfit/fold-", k, "/report.json"));
    EXPECT_EQ(fold["config"]["hidden"], dr["config"]["hidden"]) << k;
    EXPECT_EQ(fold["config"]["training"]["batch_size"].get<int64_t>(), 4) << k;
  }
  EXPECT_EQ(gr["fit_images"].get<int64_t>(), n_train);
  {
    // the start is validated: metrics.jsonl's first line is epoch 0, and the kept epoch is never
    // worse on the validation cache than the start
    const std::string m = read_file(g.out + "/metrics.jsonl");
    const json first = json::parse(m.substr(0, m.find('\n')));
    EXPECT_EQ(first["epoch"].get<int64_t>(), 0);
    EXPECT_GE(gr["best_val_accuracy"].get<double>(), first["val_accuracy"].get<double>());
  }
  // fit on the paper's training cache, or the validation cache (which it then cannot select on)
  GateOptions g_train = g, g_val = g;
  g_train.fit_on = "train";
  g_train.out = w.tmp / "gate-train";
  EXPECT_DOUBLE_EQ(train_gate(g_train)["head_fit_accuracy"].get<double>(),
                   dr["train_accuracy"].get<double>());
  g_val.fit_on = "val";
  g_val.out = w.tmp / "gate-val";
  const json gv = train_gate(g_val);
  EXPECT_EQ(gv["fit_images"].get<int64_t>(), FeatureCache::load(d.val_cache).size());
  EXPECT_TRUE(gv["best_val_accuracy"].is_null());
  g_val.val_cache.clear();
  g_val.overwrite = true;
  EXPECT_THROW(train_gate(g_val), Error);
  EvaluateOptions e;
  e.cache = w.extract("test").out;
  e.distill = d.out;
  e.gate = g.out;
  e.out = w.tmp / "eval";
  json rep = evaluate_cache(e);
  test::expect_evaluation_shape(rep, {"vlm", "teacher", "distill_head", "emovlm_kd"}, false);
  for (const char* m : {"vlm", "teacher", "distill_head", "emovlm_kd"}) {
    ASSERT_TRUE(rep["models"].contains(m)) << m;
    EXPECT_EQ(rep["models"][m]["n"].get<int64_t>(), 16) << m;
  }
  {
    // the complementarity counts of the cached answers, image by image
    FeatureCache tc = FeatureCache::load(e.cache);
    std::map<std::string, int64_t> want = {
        {"both_right", 0}, {"only_vlm", 0}, {"only_teacher", 0}, {"both_wrong", 0}};
    for (int64_t i = 0; i < tc.size(); ++i) {
      const int64_t t = tc.targets[i].item<int64_t>();
      const bool v = tc.vlm_answer[i].item<int64_t>() == t,
                 te = tc.teacher_logits[i].argmax().item<int64_t>() == t;
      ++want[v && te ? "both_right" : v ? "only_vlm" : te ? "only_teacher" : "both_wrong"];
    }
    for (const auto& [k, n] : want)
      EXPECT_EQ(rep["complementarity"]["vlm_vs_teacher"][k].get<int64_t>(), n) << k;
  }
  EXPECT_TRUE(file_exists(e.out + "/report.md"));
  {
    // intervals around each figure, the gain over each input with its McNemar counts, the oracle,
    // and the curves of both stages
    for (const char* m : {"vlm", "teacher", "distill_head", "emovlm_kd"}) {
      const json& mm = rep["models"][m];
      EXPECT_LE(mm["interval"]["accuracy"][0].get<double>(), mm["accuracy"].get<double>()) << m;
      EXPECT_GE(mm["interval"]["accuracy"][1].get<double>(), mm["accuracy"].get<double>()) << m;
      EXPECT_EQ(mm["interval"]["f1"].size(), 8u) << m;
    }
    FeatureCache tc = FeatureCache::load(e.cache);
    std::vector<int64_t> fused;
    {
      DistillHead hd = DistillHeadImpl::from_pretrained(d.out);
      Gate gt = GateImpl::from_pretrained(g.out);
      torch::NoGradGuard ng;
      torch::Tensor f =
          gt->forward(tc.vlm_input("onehot"), head_logits(*hd, tc.features)).argmax(-1);
      for (int64_t i = 0; i < tc.size(); ++i) fused.push_back(f[i].item<int64_t>());
    }
    int64_t only_kd = 0, only_vlm = 0, oracle = 0;
    for (int64_t i = 0; i < tc.size(); ++i) {
      const int64_t t = tc.targets[i].item<int64_t>();
      const bool v = tc.vlm_answer[i].item<int64_t>() == t, k = fused[i] == t;
      only_kd += k && !v, only_vlm += v && !k;
    }
    const json& gv2 = rep["gain"]["vlm"];
    EXPECT_EQ(gv2["only_emovlm_kd_right"].get<int64_t>(), only_kd);
    EXPECT_EQ(gv2["only_vlm_right"].get<int64_t>(), only_vlm);
    EXPECT_DOUBLE_EQ(gv2["mcnemar_p"].get<double>(), mcnemar_exact_p(only_kd, only_vlm));
    EXPECT_DOUBLE_EQ(gv2["difference"].get<double>(),
                     rep["models"]["emovlm_kd"]["accuracy"].get<double>() -
                         rep["models"]["vlm"]["accuracy"].get<double>());
    torch::Tensor hl_all =
        head_logits(*DistillHeadImpl::from_pretrained(d.out), tc.features).argmax(-1);
    for (int64_t i = 0; i < tc.size(); ++i) {
      const int64_t t = tc.targets[i].item<int64_t>();
      oracle += tc.vlm_answer[i].item<int64_t>() == t || hl_all[i].item<int64_t>() == t;
    }
    EXPECT_DOUBLE_EQ(rep["oracle"]["accuracy"].get<double>(), oracle / double(tc.size()));
    EXPECT_EQ(rep["curves"]["gate"][0]["epoch"].get<int64_t>(), 0);
    EXPECT_GT(rep["curves"]["distill"].size(), 1u);
    const std::string md = read_file(e.out + "/report.md");
    EXPECT_NE(md.find("McNemar"), std::string::npos) << md;
    EXPECT_NE(md.find("Oracle"), std::string::npos) << md;
  }
  // splits that share images are reported: none here; all of them when the "test" cache is the
  // training one
  EXPECT_EQ(dr["val_images_in_training"].get<int64_t>(), 0);
  EXPECT_EQ(gr["val_images_in_training"].get<int64_t>(), 0);
  EXPECT_EQ(rep["test_images_in_training"].get<int64_t>(), 0);
  EvaluateOptions on_train = e;
  on_train.cache = d.cache;
  on_train.out.clear();
  EXPECT_EQ(evaluate_cache(on_train)["test_images_in_training"].get<int64_t>(),
            FeatureCache::load(d.cache).size());
  // the bundle predicts the same emotion as the cached pipeline for a test image
  BundleSpec b;
  b.vlm = w.qwen;
  b.distill = d.out;
  b.gate = g.out;
  b.dtype = ComputeDtype::f32;
  write_bundle(w.tmp / "bundle", b);
  Predictor p(w.tmp / "bundle", ComputeDevice::cpu());
  FeatureCache test = FeatureCache::load(e.cache);
  json r = p.predict(test.paths[3]);
  DistillHead head = DistillHeadImpl::from_pretrained(d.out);
  Gate gate = GateImpl::from_pretrained(g.out);
  torch::NoGradGuard ng;
  torch::Tensor hl = head->forward(test.features.narrow(0, 3, 1));
  int64_t want =
      gate->forward(test.vlm_input("onehot").narrow(0, 3, 1), hl).argmax(-1).item<int64_t>();
  EXPECT_EQ(r["emotion"].get<std::string>(), test.labels[want]);
  EXPECT_EQ(r["head_top3"].size(), 3u);
  {
    // how much each input moved this answer: its probability with the input made neutral
    const torch::Tensor v = test.vlm_input("onehot").narrow(0, 3, 1);
    const double p_full = torch::softmax(gate->forward(v, hl), -1)[0][want].item<double>();
    const double p_no_vlm =
        torch::softmax(gate->forward(torch::full_like(v, 1.0 / 8), hl), -1)[0][want].item<double>();
    const double p_no_head =
        torch::softmax(gate->forward(v, torch::zeros_like(hl)), -1)[0][want].item<double>();
    const json& in = r["gate"]["influence"];
    EXPECT_NEAR(in["vlm"].get<double>(), p_full - p_no_vlm, 1e-5);
    EXPECT_NEAR(in["head"].get<double>(), p_full - p_no_head, 1e-5);
    EXPECT_NEAR(in["without_head"]["probability"].get<double>(), p_no_head, 1e-5);
    EXPECT_FALSE(r["gate"].contains("weights"));  // concat computes no per-image weights
    // and it is the image's own: not the same for every image
    std::set<double> seen;
    for (int i = 0; i < 6; ++i)
      seen.insert(p.predict(test.paths[i])["gate"]["influence"]["head"].get<double>());
    EXPECT_GT(seen.size(), 1u);
  }
  // several images (different sizes) in one padded VLM forward: each as predict() gives it, to
  // float rounding; each alone (deterministic): exactly; a missing file: an error in its place
  std::vector<std::string> paths = {test.paths[0], test.paths[5], w.tmp / "missing.png",
                                    test.paths[9]};
  std::vector<json> batched = p.predict_batch(paths, false), alone = p.predict_batch(paths, true);
  ASSERT_EQ(batched.size(), 4u);
  EXPECT_NE(batched[2]["error"].get<std::string>().find("missing.png"), std::string::npos);
  EXPECT_TRUE(alone[2].contains("error"));
  for (size_t i : {0u, 1u, 3u}) {
    json one = p.predict(paths[i]);
    EXPECT_EQ(alone[i], one) << paths[i];
    EXPECT_EQ(batched[i]["emotion"], one["emotion"]) << paths[i];
    for (const auto& [label, prob] : one["gate"]["probabilities"].items())
      EXPECT_NEAR(batched[i]["gate"]["probabilities"][label].get<double>(), prob.get<double>(),
                  1e-4)
          << label << "\nbatched: " << batched[i].dump() << "\nalone: " << one.dump();
  }
  // the bundle on the test split from the images: the metrics the cached evaluation gives
  DatasetOptions ds;
  ds.labels = "mikels8";
  const std::string journal = w.tmp / "bundle-eval.partial.jsonl";
  int results = 0;
  json be = evaluate_bundle(
      p, w.data, "test", ds, 3, [&](const json&) { ++results; }, journal);
  EXPECT_EQ(results, 16);
  test::expect_evaluation_shape(be, {"vlm", "distill_head", "emovlm_kd"}, true);
  EXPECT_EQ(be["images"].get<int64_t>(), 16);
  EXPECT_EQ(be["unreadable"].get<int64_t>(), 0);
  ASSERT_EQ(be["predictions"].size(), 16u);
  for (const auto& [model, key] : {std::pair<const char*, const char*>{"vlm", "vlm"},
                                   {"distill_head", "head"},
                                   {"emovlm_kd", "emotion"}}) {
    int right = 0;
    for (const json& row : be["predictions"]) right += row[key] == row["truth"];
    EXPECT_DOUBLE_EQ(be["models"][model]["accuracy"].get<double>(), right / 16.0) << model;
    EXPECT_DOUBLE_EQ(be["models"][model]["accuracy"].get<double>(),
                     rep["models"][model]["accuracy"].get<double>())
        << model;
  }
  {
    std::map<std::string, int64_t> want = {
        {"both_right", 0}, {"only_vlm", 0}, {"only_head", 0}, {"both_wrong", 0}};
    for (const json& row : be["predictions"]) {
      const bool v = row["vlm"] == row["truth"], h = row["head"] == row["truth"];
      ++want[v && h ? "both_right" : v ? "only_vlm" : h ? "only_head" : "both_wrong"];
    }
    for (const auto& [k, n] : want)
      EXPECT_EQ(be["complementarity"]["vlm_vs_head"][k].get<int64_t>(), n) << k;
  }
  // again with the same journal: every result read back, nothing computed
  results = 0;
  json again = evaluate_bundle(
      p, w.data, "test", ds, 3, [&](const json&) { ++results; }, journal);
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
  d.compute_dtype = ComputeDtype::f32;
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
  b.dtype = ComputeDtype::f32;
  write_bundle(out, b);
  return d.cache;
}

#if defined(EMOVLM_HAVE_HTTP)
// A server on a free loopback port, run on a thread of its own, stopped however the test ends.
struct Serving {
  PredictionServer server;
  int port;
  std::thread thread;
  Serving(Predictor& p, const ServeOptions& o)
      : server(p, o), port(server.bind()), thread([this] { server.run(); }) {}
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
  Predictor p(dir / "bundle", ComputeDevice::cpu());
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
  if (!http_server_available())
    GTEST_SKIP() << "this build has no HTTP server (checked in ServesPredictionsOverHttp)";
#if defined(EMOVLM_HAVE_HTTP)
  Predictor p(dir / "bundle", ComputeDevice::cpu());
  ServeOptions o;
  o.port = 0;
  o.batch = 4;
  o.batch_wait_ms = 1000;  // long enough that four requests sent at once share a batch
  Serving serving(p, o);
  const int port = serving.port;
  const std::vector<std::string> paths =
      FeatureCache::load(cache).paths;  // images of different sizes
  std::vector<json> got(4);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < 4; ++i)
    clients.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(60, 0);
      httplib::MultipartFormDataItems items = {
          {"image", read_file(paths[i]), paths[i], "image/png"}};
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
      EXPECT_NEAR(got[i]["gate"]["probabilities"][label].get<double>(), prob.get<double>(), 1e-4)
          << label;
  }
  httplib::Client c("127.0.0.1", port);
  json health = json::parse(c.Get("/health")->body);
  EXPECT_EQ(health["requests"].get<int64_t>(), 4);
  EXPECT_LT(health["batches"].get<int64_t>(), 4);  // some requests shared a forward
#endif
}

// The parts of one pipeline come from one VLM: a test cache, a bundle or a gate's cache of another
// VLM is refused, naming both and the first field of their identities that differs.
TEST(Pipeline, PartsOfAnotherVlmAreRefused) {
  World& w = world();
  test::TempDir dir;
  const std::string train_cache = small_bundle(w, dir / "bundle");
  // another VLM: the tiny checkpoint with another config (as far as an identity can tell, another
  // model)
  const std::string other = dir / "other-vlm";
  make_dirs(other);
  for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json",
                        "chat_template.json", "preprocessor_config.json"})
    fs::copy_file(w.qwen + "/" + f, other + "/" + f);
  json cfg = read_json_file(w.qwen + "/config.json");
  cfg["rms_norm_eps"] = 1e-5;
  write_file_atomic(other + "/config.json", cfg.dump());
  ExtractOptions x = w.extract("test");
  x.vlm = other;
  x.out = dir / "other-test-cache";
  extract_features(x);
  EvaluateOptions e;
  e.cache = x.out;
  e.distill = dir / "bundle-distill";
  e.gate = dir / "bundle-gate";
  try {
    evaluate_cache(e);
    ADD_FAILURE() << "a head was evaluated on the features of another VLM";
  } catch (const Error& err) {
    const std::string m = err.what();
    EXPECT_NE(m.find("was made from another VLM"), std::string::npos) << m;
    EXPECT_NE(m.find("bundle-distill"), std::string::npos) << m;
    EXPECT_NE(m.find("/vlm/config.json"), std::string::npos) << m;
  }
  BundleSpec b;
  b.vlm = other;
  b.distill = dir / "bundle-distill";
  b.gate = dir / "bundle-gate";
  EXPECT_THROW(write_bundle(dir / "wrong-bundle", b), Error);
  GateOptions g;
  g.cache = x.out;
  g.distill = dir / "bundle-distill";
  g.out = dir / "wrong-gate";
  EXPECT_THROW(train_gate(g), Error);
  // a bundle whose VLM was replaced by another one under the same path: predict says so
  BundleSpec ok;
  ok.vlm = dir / "vlm";
  fs::create_directory_symlink(w.qwen, dir / "vlm");
  ok.distill = dir / "bundle-distill";
  ok.gate = dir / "bundle-gate";
  ok.dtype = ComputeDtype::f32;
  write_bundle(dir / "b2", ok);
  EXPECT_NO_THROW(Predictor(dir / "b2", ComputeDevice::cpu()));
  fs::remove(dir / "vlm");
  fs::create_directory_symlink(other, dir / "vlm");
  EXPECT_THROW(Predictor(dir / "b2", ComputeDevice::cpu()), Error);
  (void)train_cache;
}

// A bundle holds its adapter, head and gate and names its VLM relative to itself: the folder that
// holds both moves, and the bundle still predicts.
TEST(Pipeline, BundlesAreSelfContained) {
  World& w = world();
  test::TempDir dir;
  small_bundle(w, dir / "scratch");
  make_dirs(dir / "runs");
  test::copy_tree(w.qwen, dir / "runs/vlm");
  const std::string image = FeatureCache::load(w.extract("train").out).paths[1];
  json want;
  {
    test::InDir in(dir.path());  // relative paths, as users give them
    BundleSpec b;
    b.vlm = "runs/vlm";
    b.adapter = test::ref_path("qwen2vl_tiny/lora_adapter");
    b.distill = "scratch-distill";
    b.gate = "scratch-gate";
    b.dtype = ComputeDtype::f32;
    // (the head was trained on the plain VLM's features: a bundle with an adapter is another VLM)
    EXPECT_THROW(write_bundle("runs/bundle", b), Error);
    b.adapter.clear();
    write_bundle("runs/bundle", b);
    EXPECT_EQ(read_json_file("runs/bundle/bundle.json")["vlm"], "../vlm");
    want = Predictor("runs/bundle", ComputeDevice::cpu()).predict(image);
  }
  fs::rename(dir / "runs", dir / "moved");
  remove_tree(dir / "scratch-distill");
  remove_tree(dir / "scratch-gate");
  EXPECT_EQ(Predictor(dir / "moved/bundle", ComputeDevice::cpu()).predict(image), want);
}

// A training command does not silently start over an earlier run: --resume continues it,
// --overwrite starts over (the earlier run's files replaced as the new run writes its own).
TEST(Pipeline, TrainingRefusesToStartOverWithoutOverwrite) {
  World& w = world();
  extract_features(w.extract("train"));
  test::TempDir dir;
  DistillOptions d;
  d.cache = w.extract("train").out;
  d.out = dir / "runs/distill";  // (its folder created)
  d.hidden = {8};
  d.epochs = 2;
  d.min_steps = 0;  // exactly --epochs: one metrics line each
  d.quiet = true;
  train_distill_head(d);
  const std::string metrics = read_file(d.out + "/metrics.jsonl");
  try {
    train_distill_head(d);
    ADD_FAILURE() << "an earlier run was started over";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--overwrite"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(d.out + "/metrics.jsonl"), metrics);  // untouched
  d.resume = true;  // a finished run: nothing to do, its metrics kept once per epoch
  train_distill_head(d);
  EXPECT_EQ(read_file(d.out + "/metrics.jsonl"), metrics);
  // a new run that fails in its first epoch (here: the loss diverges) leaves the earlier run's
  // files
  d.resume = false;
  d.overwrite = true;
  DistillOptions diverging = d;
  diverging.optim.lr = 1e30;
  diverging.batch_size = 1;  // a step per image: the loss is not finite within the first epoch
  diverging.compute_dtype = ComputeDtype::f32;
  EXPECT_THROW(train_distill_head(diverging), Error);
  EXPECT_EQ(read_file(d.out + "/metrics.jsonl"), metrics);
  d.epochs = 3;
  train_distill_head(d);
  int lines = 0;
  for (char ch : read_file(d.out + "/metrics.jsonl")) lines += ch == '\n';
  EXPECT_EQ(lines, 3);
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
  a.distill.epochs = 2;
  a.gate.epochs = 2;
  a.distill.min_steps = a.gate.min_steps = 100;  // the sweep's mechanics, not convergence
  json r = run_ablation(a);
  ASSERT_EQ(r["rows"].size(), 2u);
  EXPECT_EQ(r["rows"][1]["gate"], "dynamic");
  for (const char* f : {"ablation.md", "ablation.json", "ablation.png"})
    EXPECT_TRUE(file_exists(a.out + "/" + f)) << f;
  EXPECT_EQ(decode_image_file(a.out + "/ablation.png").width, BarChart{}.width);
}

// A training run killed with SIGKILL and resumed ends with the same weights as an uninterrupted
// run.
TEST(Pipeline, ResumeAfterSigkillIsExact) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");  // the tiny models of the fixture
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  World& w = world();
  extract_features(w.extract("train"));
  const std::string cache = w.extract("train").out;
  auto run = [&](const std::string& out, bool resume) {
    std::vector<std::string> args = {EMOVLM_CLI_PATH,
                                     "--threads",
                                     "1",
                                     "-q",
                                     "distill",
                                     "--cache",
                                     cache,
                                     "--out",
                                     out,
                                     "--hidden",
                                     "512,512",
                                     "--epochs",
                                     "60",
                                     "--batch-size",
                                     "1",
                                     "--save-every",
                                     "7"};
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
  // every epoch's metrics line once, and no temporary file of the killed write left behind
  auto epochs = [](const std::string& path) {
    std::vector<int64_t> e;
    std::istringstream in(read_file(path));
    for (std::string line; std::getline(in, line);)
      e.push_back(json::parse(line)["epoch"].get<int64_t>());
    return e;
  };
  EXPECT_EQ(epochs(killed + "/metrics.jsonl"), epochs(full + "/metrics.jsonl"));
  for (const auto& entry : fs::directory_iterator(killed))
    EXPECT_EQ(entry.path().filename().string().find(".tmp."), std::string::npos) << entry.path();
}
