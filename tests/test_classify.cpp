// The VLM alone as a classifier (pipeline/classify): images in order with unreadable ones in
// their place, batched scores equal to each-alone ones, generate mode, and the evaluation of a
// labelled split.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "emovlm/core/error.h"
#include "emovlm/core/paths.h"
#include "emovlm/data/labels.h"
#include "emovlm/pipeline/classify.h"
#include "emovlm/pipeline/evaluate.h"
#include "test_util.h"

using namespace emovlm;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

ClassifyOptions tiny(int batch = 1) {
  ClassifyOptions o;
  o.vlm = test::ref_path("qwen2vl_tiny");
  o.dtype = ComputeDtype::f32;
  o.device = ComputeDevice::cpu();
  o.labels = "amusement,sadness,fear";
  o.batch = batch;
  return o;
}

std::vector<json> run(VlmClassifier& c, const std::vector<std::string>& paths) {
  std::vector<json> out;
  c.classify(paths, [&](const json& r) { out.push_back(r); });
  return out;
}

// The fixture's image files (cases.json), at least `n` of them (repeated when it has fewer).
std::vector<std::string> fixture_images(size_t n) {
  std::vector<std::string> out;
  const std::vector<test::RefImage> ims = test::reference_images();
  if (ims.empty()) throw Error("cases.json lists no image");
  for (size_t i = 0; out.size() < std::max(n, ims.size()); ++i)
    out.push_back(ims[i % ims.size()].path);
  return out;
}

std::string extension(const std::string& path) {
  return fs::path(path).extension().string();
}

}  // namespace

TEST(Classify, InOrderWithUnreadableImagesInTheirPlaceAndBatchesEqualToAlone) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  test::TempDir tmp;
  const std::string bad = tmp / "bad.png";
  std::ofstream(bad) << "not an image";
  const std::vector<std::string> ims = fixture_images(4);
  const std::vector<std::string> paths = {ims[0], ims[1], bad, ims[2], ims[3]};
  VlmClassifier alone(tiny(1)), batched(tiny(3));
  const std::vector<json> a = run(alone, paths), b = run(batched, paths);
  ASSERT_EQ(a.size(), paths.size());
  ASSERT_EQ(b.size(), paths.size());
  for (size_t i = 0; i < paths.size(); ++i) {
    EXPECT_EQ(a[i]["image"], paths[i]);
    EXPECT_EQ(b[i]["image"], paths[i]);
    if (i == 2) {
      EXPECT_NE(a[i]["error"].get<std::string>().find("bad.png"), std::string::npos);
      EXPECT_TRUE(b[i].contains("error"));
      continue;
    }
    EXPECT_EQ(a[i]["label"], b[i]["label"]) << paths[i];
    double sum = 0;
    for (const auto& [label, p] : a[i]["probabilities"].items()) {
      sum += p.get<double>();
      EXPECT_NEAR(b[i]["probabilities"][label].get<double>(), p.get<double>(), 1e-5) << label;
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
    EXPECT_EQ(a[i]["probabilities"].size(), 3u);
  }
  // each alone does not depend on the others: the same image alone gives the same result
  EXPECT_EQ(run(alone, {paths[3]})[0], a[3]);
}

TEST(Classify, GenerateModeAnswersAndRefusesBatches) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  ClassifyOptions o = tiny();
  o.mode = "generate";
  o.max_new_tokens = 4;
  VlmClassifier c(o);
  const std::vector<json> r = run(c, {fixture_images(1).back()});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].contains("answer"));
  // the label is what the reference's parsing reads in the answer; no answer, no class
  const ParsedAnswer pa = parse_categorical_answer(r[0]["answer"].get<std::string>(), c.labels());
  EXPECT_EQ(r[0]["label"], pa.index >= 0 ? json(c.labels().labels[pa.index]) : json(nullptr));
  EXPECT_EQ(r[0].value("unparsable", false), pa.index < 0);
  o.batch = 2;
  EXPECT_THROW(o.validate(), Error);
  ClassifyOptions bad = tiny();
  bad.mode = "vote";
  EXPECT_THROW(VlmClassifier{bad}, Error);
}

namespace {
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}
}  // namespace

// Sampling draws an image's answer from prompt_seed(--seed, its pixels): the same answers in any
// order and in `emovlm chat` given the same prompt; another seed, other answers.
TEST(Classify, GenerateModeSeedsEachImageByItsContent) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  ClassifyOptions o = tiny();
  o.mode = "generate";
  o.max_new_tokens = 6;
  o.seed = 5;
  VlmClassifier c(o);
  const std::vector<std::string> ims = fixture_images(3);
  const std::vector<std::string> paths = {ims[0], ims[1], ims[2]},
                                 reversed = {ims[2], ims[1], ims[0]};
  const std::vector<json> a = run(c, paths), b = run(c, reversed);
  ASSERT_EQ(a.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(a[i].contains("answer")) << a[i].dump();
    EXPECT_EQ(a[i]["answer"], b[2 - i]["answer"]) << paths[i];
  }
  o.seed = 6;
  VlmClassifier other(o);
  const std::vector<json> d = run(other, paths);
  int differ = 0;
  for (size_t i = 0; i < 3; ++i) differ += d[i]["answer"] != a[i]["answer"];
  EXPECT_GT(differ, 0) << "another seed drew the same answers";
  // chat with the categorical prompt and the same seed answers as classify
  const std::string prompt = categorical_prompt(LabelSet::from_spec(o.labels));
  const std::string cmd =
      std::string(EMOVLM_CLI_PATH) + " -q chat --vlm " + shell_quote(o.vlm) +
      " --dtype f32 --device cpu --temperature 0.8 --seed 5 --max-new-tokens 6 --image " +
      shell_quote(paths[0]) + " --system " + shell_quote(kEmotionSystemMessage) + " --prompt " +
      shell_quote(prompt) + " 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  EXPECT_EQ(pclose(pipe), 0) << cmd;
  if (!out.empty() && out.back() == '\n') out.pop_back();
  EXPECT_EQ(out, a[0]["answer"].get<std::string>());
}

TEST(Classify, EvaluatesALabelledSplit) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  test::TempDir tmp;
  const std::string root = tmp / "data";
  for (const char* label : {"amusement", "sadness", "fear"}) {
    fs::create_directories(root + "/train/" + label);
    fs::create_directories(root + "/test/" + label);
    test::write_test_image(root + "/train/" + label + "/x.png", 40, 90, 30);
  }
  const std::vector<std::string> ims = fixture_images(3);
  fs::copy_file(ims[0], root + "/test/amusement/a" + extension(ims[0]));
  fs::copy_file(ims[1], root + "/test/amusement/b" + extension(ims[1]));
  fs::copy_file(ims[2], root + "/test/sadness/c" + extension(ims[2]));
  test::write_test_image(root + "/test/fear/d.png", 40, 30, 200);
  std::ofstream(root + "/test/fear/broken.png") << "truncated";
  VlmClassifier c(tiny(2));
  int seen = 0;
  json r = evaluate_vlm(c, root, "test", {}, [&](const json& row) {
    ++seen;
    EXPECT_TRUE(row.contains("truth"));
  });
  EXPECT_EQ(seen, 5);
  EXPECT_EQ(r["images"].get<int64_t>(), 5);
  EXPECT_EQ(r["unreadable"].get<int64_t>(), 1);
  EXPECT_NE(r["unreadable_images"][0]["image"].get<std::string>().find("broken.png"),
            std::string::npos);
  test::expect_evaluation_shape(r, {"vlm"}, true);
  const json& m = r["models"]["vlm"];
  ASSERT_EQ(m["n"].get<int64_t>(), 4);
  ASSERT_EQ(r["predictions"].size(), 4u);
  int64_t right = 0, in_confusion = 0;
  for (const json& p : r["predictions"]) {
    right += p["label"] == p["truth"];
    EXPECT_NE(p["image"].get<std::string>().find("/test/" + p["truth"].get<std::string>() + "/"),
              std::string::npos);
  }
  for (const auto& row : m["confusion"])
    for (const auto& v : row) in_confusion += v.get<int64_t>();
  EXPECT_EQ(in_confusion, 4);
  EXPECT_DOUBLE_EQ(m["accuracy"].get<double>(), right / 4.0);
  EXPECT_EQ(r["labels"],
            (json{"amusement", "fear", "sadness"}));  // sorted, as every artifact stores them
  // a folder outside the label set is an error before any image is classified
  fs::create_directories(root + "/test/joy");
  test::write_test_image(root + "/test/joy/e.png", 40, 30, 10);
  EXPECT_THROW(evaluate_vlm(c, root, "test", {}), Error);
}

TEST(Classify, EvaluationResumesFromItsJournal) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  test::TempDir tmp;
  test::InDir in(tmp.path());  // relative paths, as users give them
  const std::string root = "data";
  const char* labels[] = {"amusement", "sadness", "fear"};
  const std::vector<std::string> images = fixture_images(4);
  for (const char* label : labels)
    test::write_test_image(root + "/train/" + label + "/x.png", 40, 90, 30);
  for (int i = 0; i < 4; ++i) {
    fs::create_directories(root + "/test/" + labels[i % 3]);
    fs::copy_file(images[i],
                  root + "/test/" + labels[i % 3] + "/" + std::to_string(i) + extension(images[i]));
  }
  fs::create_directories("runs");
  const std::string journal = "runs/report.json.partial.jsonl";
  VlmClassifier c(tiny());
  const json full = evaluate_vlm(c, root, "test", {}, {}, journal);
  EXPECT_EQ(full["resumed"].get<int64_t>(), 0);
  std::vector<std::string> lines;
  {
    std::ifstream in(journal);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  ASSERT_EQ(lines.size(), 5u);  // the settings, then one line per image
  // a run killed after two images, in the middle of writing the third; the second's label
  // changed, to see that it is read back and not computed again
  json second = json::parse(lines[2]);
  const std::string changed = second["label"] == "fear" ? "sadness" : "fear";
  second["label"] = changed;
  {
    std::ofstream out(journal, std::ios::trunc);
    out << lines[0] << '\n' << lines[1] << '\n' << second.dump() << '\n' << lines[3].substr(0, 20);
  }
  int computed = 0;
  const json resumed = evaluate_vlm(
      c, root, "test", {}, [&](const json&) { ++computed; }, journal);
  EXPECT_EQ(computed, 2);
  EXPECT_EQ(resumed["resumed"].get<int64_t>(), 2);
  ASSERT_EQ(resumed["predictions"].size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const json& p = resumed["predictions"][i];
    EXPECT_EQ(p["image"], full["predictions"][i]["image"]);
    const bool is_second =
        p["image"] == resolve_stored_path(second["image"].get<std::string>(), journal);
    EXPECT_EQ(p["label"], is_second ? json(changed) : full["predictions"][i]["label"])
        << p["image"];
  }
  {
    std::ifstream in(journal);
    int n = 0;
    for (std::string l; std::getline(in, l); ++n)
      EXPECT_FALSE(json::parse(l, nullptr, false).is_discarded()) << l;
    EXPECT_EQ(n, 5);  // the cut line was dropped before appending
  }
  // the journal's images are stored relative to it, and matched by identity: the journal moved to
  // another folder, the data spelled another way, every result is read back
  EXPECT_EQ(second["image"].get<std::string>().rfind("../data/test/", 0), 0u) << second["image"];
  fs::rename("runs", "runs2");
  computed = 0;
  const json moved = evaluate_vlm(
      c, tmp / "data/./../data/", "test", {}, [&](const json&) { ++computed; },
      "runs2/report.json.partial.jsonl");
  EXPECT_EQ(computed, 0);
  EXPECT_EQ(moved["resumed"].get<int64_t>(), 4);
  fs::rename("runs2", "runs");
  // another setting: refused, naming it
  ClassifyOptions other = tiny();
  other.cap_long_side = 512;
  VlmClassifier c2(other);
  try {
    evaluate_vlm(c2, root, "test", {}, {}, journal);
    ADD_FAILURE() << "a journal of other settings was reused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/cap_long_side: 1024 (now 512)"), std::string::npos)
        << e.what();
  }
}

// A split none of whose images can be read is an error, not 0% accuracy.
TEST(Classify, AnUnreadableSplitIsAnError) {
  test::TempDir tmp;
  std::string lines;
  for (const char* label : {"amusement", "sadness", "fear"})
    for (const char* split : {"train", "test"})
      lines += json({{"path", cat("missing-", split, "-", label, ".png")},
                     {"label", label},
                     {"split", split}})
                   .dump() +
               "\n";
  write_file_atomic(tmp / "m.jsonl", lines);
  VlmClassifier c(tiny());
  try {
    evaluate_vlm(c, tmp / "m.jsonl", "test", {});
    ADD_FAILURE() << "a split of nothing was evaluated";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("m.jsonl: none of the 3 images of the test split could be read"),
        std::string::npos)
        << e.what();
  }
}
