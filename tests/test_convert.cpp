// Converters from the native dataset formats, on small files written in those formats.
#include <gtest/gtest.h>

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/data/convert.h"
#include "emovlm/data/dataset.h"
#include "emovlm/image/image.h"
#include "test_util.h"

using namespace emovlm;
namespace fs = std::filesystem;

namespace {
void touch_image(const std::string& path) {
  fs::create_directories(fs::path(path).parent_path());
  RgbImage img(8, 8);
  write_image_file(path, img);
}
}  // namespace

TEST(Convert, EmoSet) {
  test::TempDir d;
  touch_image(d / "image/amusement/amusement_00001.jpg");
  touch_image(d / "image/fear/fear_00002.jpg");
  touch_image(d / "image/awe/awe_00003.jpg");
  touch_image(d / "image/awe/awe_00004.jpg");
  write_file_atomic(
      d / "train.json",
      R"([["amusement", "amusement_00001", "image/amusement/amusement_00001.jpg", "annotation/amusement/amusement_00001.json"],
                                          ["fear", "fear_00002", "image/fear/fear_00002.jpg", "annotation/fear/fear_00002.json"],
                                          ["awe", "awe_00004", "image/awe/awe_00004.jpg", "annotation/awe/awe_00004.json"],
                                          ["fear", "fear_09999", "image/fear/fear_09999.jpg", "annotation/fear/fear_09999.json"]])");
  write_file_atomic(
      d / "test.json",
      R"([["awe", "awe_00003", "image/awe/awe_00003.jpg", "annotation/awe/awe_00003.json"]])");
  json r = convert_dataset({"emoset", d.path(), "", d / "emoset.jsonl"});
  EXPECT_EQ(r["images"].get<int>(), 4);
  EXPECT_EQ(r["missing"].size(), 1u);
  Dataset ds = load_dataset(d / "emoset.jsonl", DatasetOptions{"", 0.0, 0.0, 42});
  EXPECT_EQ(ds.test.size(), 1u);
  EXPECT_EQ(ds.labels.labels, (std::vector<std::string>{"amusement", "awe", "fear"}));
  write_file_atomic(d / "train.json", R"([["joy", "x", "image/x.jpg", "a"]])");
  EXPECT_THROW(convert_dataset({"emoset", d.path(), "", d / "bad.jsonl"}), Error);
}

TEST(Convert, Emotion6) {
  test::TempDir d;
  touch_image(d / "images/anger/1.jpg");
  touch_image(d / "images/joy/2.jpg");
  touch_image(d / "images/fear/3.jpg");
  write_file_atomic(
      d / "ground_truth.txt",
      "[image_filename]\t[valence]\t[arousal]\t[prob. anger]\t[prob. disgust]\t[prob. "
      "fear]\t[prob. joy]\t[prob. sadness]\t[prob. surprise]\t[prob. neutral]\n"
      "anger/1.jpg\t3.1\t5.2\t0.5\t0.2\t0.1\t0\t0.1\t0\t0.1\n"
      "joy/2.jpg\t6.9\t4.0\t0\t0\t0\t0.3\t0\t0.2\t0.5\n"
      "fear/3.jpg\t2.0\t6.0\t0\t0\t0.4\t0\t0.4\t0\t0.2\n");
  json r = convert_dataset({"emotion6", d.path(), "", d / "e6.jsonl"});
  EXPECT_EQ(r["images"].get<int>(), 3);
  EXPECT_EQ(r["ties"].size(), 1u);  // fear/sadness at 0.4
  Dataset ds = load_dataset(d / "e6.jsonl", DatasetOptions{"", 0.0, 0.0, 42});
  std::map<std::string, std::string> label_of;
  for (const auto& s : ds.train)
    label_of[fs::path(s.path).filename().string()] = ds.labels.labels[s.label];
  EXPECT_EQ(label_of["2.jpg"],
            "joy");  // neutral (0.5) is not a class: the dominant of the six is joy
  EXPECT_EQ(label_of["3.jpg"], "fear");
  for (const auto& s : ds.train)
    if (fs::path(s.path).filename() == "2.jpg") EXPECT_FLOAT_EQ(s.soft.at("neutral"), 0.5f);
}

TEST(Convert, VoteCounts) {
  test::TempDir d;
  touch_image(d / "img/101.jpg");
  touch_image(d / "img/102.jpg");
  touch_image(d / "img/103.jpg");
  write_file_atomic(d / "votes.txt", "id positive negative\n101 4 1\n102 1 2\n103 2 2\n104 3 0\n");
  json r = convert_dataset({"votes", d / "votes.txt", d / "img", d / "v.jsonl"});
  EXPECT_EQ(r["images"].get<int>(), 2);
  EXPECT_EQ(r["ties"], json::array({"103"}));
  EXPECT_EQ(r["missing"], json::array({"104"}));
  std::string m = read_file(d / "v.jsonl");
  EXPECT_NE(m.find("\"label\":\"positive\""), std::string::npos);
  EXPECT_NE(m.find("\"label\":\"negative\""), std::string::npos);
  EXPECT_THROW(convert_dataset({"votes", d / "votes.txt", "", d / "x.jsonl"}), Error);
  EXPECT_THROW(convert_dataset({"nope", d.path(), "", d / "x.jsonl"}), Error);
}

// Image folders as the FI download comes (ROOT/<emotion>/), with the test and validation splits
// written into the manifest: stratified, seeded, the same on every run, 80/5/15 of each class.
TEST(Convert, FoldersWithWrittenSplits) {
  test::TempDir d;
  for (const char* cls : {"awe", "fear"})
    for (int i = 0; i < 40; ++i) touch_image(d / cat("FI/", cls, "/", cls, "_", i, ".jpg"));
  write_file_atomic(d / "FI/awe/readme.txt", "not an image");
  ConvertOptions o{"folders", d / "FI", "", d / "fi.jsonl"};
  o.test_fraction = 0.15;
  o.val_fraction = 0.05;
  json r = convert_dataset(o);
  EXPECT_EQ(r["images"].get<int>(), 80);
  EXPECT_EQ(r["labels"], json::array({"awe", "fear"}));
  EXPECT_EQ(r["split_counts"], json({{"test", 12}, {"train", 64}, {"val", 4}}));
  Dataset ds = load_dataset(d / "fi.jsonl");
  ASSERT_EQ(ds.test.size(), 12u);
  ASSERT_EQ(ds.val.size(), 4u);
  EXPECT_EQ(ds.train.size(), 64u);
  std::vector<int> per(2, 0);
  for (const auto& s : ds.test) per[s.label]++;
  EXPECT_EQ(per, (std::vector<int>{6, 6}));
  // the same manifest again; another seed, another test split
  o.out = d / "again.jsonl";
  convert_dataset(o);
  EXPECT_EQ(read_file(d / "again.jsonl"), read_file(d / "fi.jsonl"));
  o.split_seed = 7;
  o.out = d / "seed7.jsonl";
  convert_dataset(o);
  Dataset other = load_dataset(d / "seed7.jsonl");
  bool differs = false;
  for (size_t i = 0; i < ds.test.size(); ++i) differs |= ds.test[i].path != other.test[i].path;
  EXPECT_TRUE(differs);
  // the test split is the one load_dataset cuts from a manifest without splits
  ConvertOptions plain{"folders", d / "FI", "", d / "plain.jsonl"};
  json pr = convert_dataset(plain);
  EXPECT_EQ(read_file(d / "plain.jsonl").find("\"split\""), std::string::npos);
  DatasetOptions lo;
  lo.test_fraction = 0.15;
  Dataset cut = load_dataset(d / "plain.jsonl", lo);
  ASSERT_EQ(cut.test.size(), ds.test.size());
  for (size_t i = 0; i < cut.test.size(); ++i) EXPECT_EQ(cut.test[i].path, ds.test[i].path);

  // ROOT/{train,test}/<emotion>/: the folders' splits, fractions only for what has none
  for (const char* split : {"train", "test"})
    for (const char* cls : {"awe", "fear"}) touch_image(d / cat("R/", split, "/", cls, "/1.png"));
  ConvertOptions ref{"folders", d / "R", "", d / "r.jsonl"};
  ref.test_fraction = 0.2;
  json rr = convert_dataset(ref);
  EXPECT_EQ(rr["split_counts"], json({{"test", 2}, {"train", 2}}));
  EXPECT_TRUE(rr.contains("note_split"));
  // bad fractions, empty folders: errors naming what is wrong
  ref.test_fraction = 0.7;
  ref.val_fraction = 0.3;
  EXPECT_THROW(convert_dataset(ref), Error);
  fs::create_directories(d / "empty/awe");
  EXPECT_THROW(convert_dataset({"folders", d / "empty", "", d / "e.jsonl"}), Error);
}
