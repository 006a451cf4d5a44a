// `data check`: duplicates within and across splits, the same image under two labels, unreadable
// files, image sizes.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/data/check.h"
#include "emovlm/image/image.h"
#include "test_util.h"

using namespace emovlm;
using json = nlohmann::json;
namespace fs = std::filesystem;

TEST(DataCheck, DuplicatesConflictsAndUnreadableFiles) {
  test::TempDir d;
  const std::string root = d / "ds";
  for (int k = 0; k < 4; ++k) {
    test::write_test_image(root + "/train/awe/" + std::to_string(k) + ".png", 20 + k, 10,
                           static_cast<uint8_t>(k));
    test::write_test_image(root + "/train/fear/" + std::to_string(k) + ".png", 10, 30 + k,
                           static_cast<uint8_t>(100 + k));
  }
  test::write_test_image(root + "/test/awe/t0.png", 16, 16, 200);
  test::write_test_image(root + "/test/fear/t1.png", 16, 16, 201);
  // a training image copied into the test split, a copy within train, the same image as awe and
  // fear
  fs::copy_file(root + "/train/awe/1.png", root + "/test/awe/leak.png");
  fs::copy_file(root + "/train/awe/2.png", root + "/train/awe/2b.png");
  fs::copy_file(root + "/train/fear/3.png", root + "/train/awe/also_fear.png");
  write_file_atomic(root + "/train/fear/broken.png", "\x89PNG\r\n\x1a\n but then nothing");

  CheckOptions o;
  o.data = root;
  o.dataset.val_fraction = 0;
  o.threads = 2;
  json r = check_dataset(o);
  EXPECT_EQ(r["duplicate_groups"].get<int>(), 3);
  EXPECT_EQ(r["duplicate_extra_copies"].get<int>(), 3);
  EXPECT_EQ(r["cross_split_duplicates"].get<int>(), 1);
  EXPECT_EQ(r["conflicting_labels"].get<int>(), 1);
  for (const auto& g : r["duplicates"]) {
    std::set<std::string> names;
    for (const auto& c : g["copies"])
      names.insert(fs::path(c["path"].get<std::string>()).filename().string());
    if (g["across_splits"].get<bool>())
      EXPECT_EQ(names, (std::set<std::string>{"1.png", "leak.png"}));
    if (g["conflicting_labels"].get<bool>())
      EXPECT_EQ(names, (std::set<std::string>{"3.png", "also_fear.png"}));
  }
  EXPECT_TRUE(r["unreadable"].empty());  // hashing reads files; only decoding finds the broken one
  EXPECT_FALSE(r.contains("sizes"));

  o.decode = true;
  o.out = d / "report.json";
  r = check_dataset(o);
  ASSERT_EQ(r["unreadable"].size(), 1u);
  EXPECT_NE(r["unreadable"][0]["error"].get<std::string>().find("broken.png"), std::string::npos);
  EXPECT_EQ(r["unreadable"][0]["split"], "train");
  EXPECT_EQ(r["sizes"]["width"]["min"].get<int>(), 10);
  EXPECT_EQ(r["sizes"]["height"]["max"].get<int>(), 33);
  EXPECT_EQ(read_json_file(d / "report.json")["duplicate_groups"].get<int>(), 3);
}

// A FIFO listed in a manifest is reported, not waited on; a manifest of nothing readable is an
// error (after the report, which lists every file); the report's paths are relative to it.
TEST(DataCheck, SpecialFilesAndNothingReadable) {
  test::TempDir d;
  test::write_test_image(d / "img/a.png", 8, 8, 1);
  test::write_test_image(d / "img/b.png", 8, 8, 2);
  ASSERT_EQ(mkfifo((d / "img/pipe.png").c_str(), 0644), 0);
  write_file_atomic(d / "m.jsonl", R"({"path": "img/a.png", "label": "awe"}
{"path": "img/b.png", "label": "fear"}
{"path": "img/pipe.png", "label": "fear"}
)");
  test::InDir in(d.path());  // relative paths, as users give them
  CheckOptions o;
  o.data = "m.jsonl";
  o.dataset.val_fraction = 0;
  o.decode = true;
  o.out = "reports/check.json";  // (a folder that does not exist yet)
  json r = check_dataset(o);
  ASSERT_EQ(r["unreadable"].size(), 1u);
  EXPECT_NE(r["unreadable"][0]["error"].get<std::string>().find("pipe.png: not a regular file"),
            std::string::npos);
  const json stored = read_json_file(o.out);
  EXPECT_EQ(stored["unreadable"][0]["path"], "../img/pipe.png");
  EXPECT_EQ(stored["data"], "../m.jsonl");

  write_file_atomic(d / "none.jsonl", R"({"path": "img/gone.png", "label": "awe"}
{"path": "img/pipe.png", "label": "fear"}
)");
  o.data = "none.jsonl";
  try {
    check_dataset(o);
    ADD_FAILURE() << "a dataset of nothing readable passed";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("none.jsonl: none of the 2 images of the dataset could be read"),
        std::string::npos)
        << e.what();
  }
  EXPECT_EQ(read_json_file(o.out)["unreadable"].size(), 2u);  // the report was written first
}
