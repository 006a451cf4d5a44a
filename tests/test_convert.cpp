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
  write_file_atomic(d / "train.json", R"([["amusement", "amusement_00001", "image/amusement/amusement_00001.jpg", "annotation/amusement/amusement_00001.json"],
                                          ["fear", "fear_00002", "image/fear/fear_00002.jpg", "annotation/fear/fear_00002.json"],
                                          ["awe", "awe_00004", "image/awe/awe_00004.jpg", "annotation/awe/awe_00004.json"],
                                          ["fear", "fear_09999", "image/fear/fear_09999.jpg", "annotation/fear/fear_09999.json"]])");
  write_file_atomic(d / "test.json", R"([["awe", "awe_00003", "image/awe/awe_00003.jpg", "annotation/awe/awe_00003.json"]])");
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
  write_file_atomic(d / "ground_truth.txt",
                    "[image_filename]\t[valence]\t[arousal]\t[prob. anger]\t[prob. disgust]\t[prob. fear]\t[prob. joy]\t[prob. sadness]\t[prob. surprise]\t[prob. neutral]\n"
                    "anger/1.jpg\t3.1\t5.2\t0.5\t0.2\t0.1\t0\t0.1\t0\t0.1\n"
                    "joy/2.jpg\t6.9\t4.0\t0\t0\t0\t0.3\t0\t0.2\t0.5\n"
                    "fear/3.jpg\t2.0\t6.0\t0\t0\t0.4\t0\t0.4\t0\t0.2\n");
  json r = convert_dataset({"emotion6", d.path(), "", d / "e6.jsonl"});
  EXPECT_EQ(r["images"].get<int>(), 3);
  EXPECT_EQ(r["ties"].size(), 1u);  // fear/sadness at 0.4
  Dataset ds = load_dataset(d / "e6.jsonl", DatasetOptions{"", 0.0, 0.0, 42});
  std::map<std::string, std::string> label_of;
  for (const auto& s : ds.train) label_of[fs::path(s.path).filename().string()] = ds.labels.labels[s.label];
  EXPECT_EQ(label_of["2.jpg"], "joy");  // neutral (0.5) is not a class: the dominant of the six is joy
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
