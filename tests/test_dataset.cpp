// Datasets (folders, manifests, the seeded split, errors) and the threaded batch loader.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/loader.h"
#include "test_util.h"

using namespace emovlm;
namespace fs = std::filesystem;

namespace {

// ROOT/{train,test}/<class>/k.png with n images per class
void make_tree(const std::string& root, const std::vector<std::string>& classes, int n,
               bool with_val = false) {
  for (size_t c = 0; c < classes.size(); ++c)
    for (int k = 0; k < n; ++k) {
      test::write_test_image(root + "/train/" + classes[c] + "/" + std::to_string(k) + ".png",
                             20 + k, 16, static_cast<uint8_t>(c * 30));
      if (k < 2)
        test::write_test_image(root + "/test/" + classes[c] + "/t" + std::to_string(k) + ".png", 16,
                               16, 5);
      if (with_val && k < 2)
        test::write_test_image(root + "/val/" + classes[c] + "/v" + std::to_string(k) + ".png", 16,
                               16, 9);
    }
}

}  // namespace

TEST(Dataset, FoldersSortedClassesAndSeededSplit) {
  test::TempDir dir;
  make_tree(dir.path(), {"fear", "awe", "anger"}, 10);
  Dataset d = load_dataset(dir.path());
  EXPECT_EQ(d.labels.labels, (std::vector<std::string>{"anger", "awe", "fear"}));
  EXPECT_EQ(d.train.size() + d.val.size(), 30u);
  EXPECT_EQ(d.val.size(), 3u);  // 10% of each class
  std::vector<int> per(3, 0);
  for (const auto& s : d.val) per[s.label]++;
  EXPECT_EQ(per, (std::vector<int>{1, 1, 1}));
  EXPECT_EQ(d.test.size(), 6u);
  // the same split every time
  Dataset again = load_dataset(dir.path());
  for (size_t i = 0; i < d.val.size(); ++i) EXPECT_EQ(d.val[i].path, again.val[i].path);
  // another seed: another split
  DatasetOptions o;
  o.split_seed = 7;
  Dataset other = load_dataset(dir.path(), o);
  bool differs = false;
  for (size_t i = 0; i < d.val.size(); ++i) differs |= d.val[i].path != other.val[i].path;
  EXPECT_TRUE(differs);
  // an explicit label set whose classes have no images here: an error before any training
  o = {};
  o.labels = "mikels8";
  try {
    load_dataset(dir.path(), o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class 'amusement' has no images"), std::string::npos)
        << e.what();
  }
}

// GIF and BMP files are samples like JPEGs; formats that cannot be decoded (TIFF) are samples too,
// so that the loader reports them as skipped instead of their vanishing from the split.
TEST(Dataset, OtherImageFormatsAreListedAndReported) {
  test::TempDir dir;
  make_tree(dir.path(), {"a", "b"}, 3);
  const std::string formats = std::string(EMOVLM_TEST_DATA_DIR) + "/formats";
  write_file_atomic(dir / "train/a/x.GIF", read_file(formats + "/pillow_plain.gif"));
  write_file_atomic(dir / "train/b/y.bmp", read_file(formats + "/pillow_rgb24.bmp"));
  write_file_atomic(dir / "train/b/z.tif", std::string("II*\0", 4) + std::string(20, '\0'));
  write_file_atomic(dir / "train/b/notes.txt", "not an image");
  DatasetOptions o;
  o.val_fraction = 0;
  Dataset d = load_dataset(dir.path(), o);
  ASSERT_EQ(d.train.size(), 9u);  // 6 PNGs, the GIF, the BMP, the TIFF; not the text file
  VitImageConfig img;
  img.image_size = 16;
  LoaderOptions lo;
  lo.batch_size = 4;
  lo.workers = 2;
  ImageBatchLoader loader(d.train, img, lo);
  loader.start_epoch(0);
  ImageBatch b;
  size_t seen = 0;
  while (loader.next(b)) seen += b.labels.size();
  EXPECT_EQ(seen, 8u);
  ASSERT_EQ(loader.failures().size(), 1u);
  EXPECT_NE(loader.failures()[0].find("z.tif"), std::string::npos) << loader.failures()[0];
  EXPECT_NE(loader.failures()[0].find("unsupported image format TIFF"), std::string::npos)
      << loader.failures()[0];
}

TEST(Dataset, ValFolderAndErrors) {
  test::TempDir dir;
  make_tree(dir.path(), {"negative", "positive"}, 4, true);
  DatasetOptions o;
  o.labels = "binary";
  Dataset d = load_dataset(dir.path(), o);
  EXPECT_EQ(d.val_origin, "val/");
  EXPECT_EQ(d.val.size(), 4u);
  EXPECT_EQ(d.train.size(), 8u);

  test::TempDir bad;
  make_tree(bad.path(), {"negative", "positive"}, 3);
  fs::create_directories(bad / "train/neutral");
  o.labels = "binary";
  EXPECT_THROW(load_dataset(bad.path(), o), Error);  // folder outside the label set
  o.labels = "";
  EXPECT_THROW(load_dataset(bad.path(), o), Error);  // empty class 'neutral'
  EXPECT_THROW(load_dataset(bad / "nothing"), Error);
  test::TempDir no_test;
  make_tree(no_test.path(), {"a", "b"}, 3);
  remove_tree(no_test / "test");
  EXPECT_THROW(load_dataset(no_test.path()).split("test"), Error);
}

TEST(Dataset, Manifests) {
  test::TempDir dir;
  test::write_test_image(dir / "img/1.png", 8, 8, 1);
  test::write_test_image(dir / "img/2.png", 8, 8, 2);
  test::write_test_image(dir / "img/3.png", 8, 8, 3);
  write_file_atomic(dir / "m.csv",
                    "path,label,split,soft_joy\nimg/1.png,joy,train,0.9\nimg/2.png,fear,train,0.1\n"
                    "img/3.png,joy,test,1\nimg/1.png,fear,val,\n");
  Dataset d = load_dataset(dir / "m.csv");
  EXPECT_EQ(d.labels.labels, (std::vector<std::string>{"fear", "joy"}));
  EXPECT_EQ(d.train.size(), 2u);
  EXPECT_EQ(d.test.size(), 1u);
  EXPECT_FLOAT_EQ(d.train[0].soft.at("joy"), 0.9f);
  EXPECT_EQ(d.test[0].path, dir / "img/3.png");
  write_file_atomic(dir / "m.jsonl", R"({"path": "img/1.png", "label": "joy"})"
                                     "\n"
                                     R"({"path": "img/2.png", "label": "fear"})"
                                     "\n"
                                     R"({"path": "img/3.png", "label": "joy", "split": "test"})"
                                     "\n");
  Dataset j = load_dataset(dir / "m.jsonl");
  EXPECT_EQ(j.test.size(), 1u);
  write_file_atomic(dir / "bad.jsonl", R"({"path": "img/1.png", "label": "joy", "split": "dev"})"
                                       "\n");
  EXPECT_THROW(load_dataset(dir / "bad.jsonl"), Error);
  DatasetOptions o;
  o.labels = "binary";
  EXPECT_THROW(load_dataset(dir / "m.jsonl", o), Error);  // 'joy' outside binary
}

TEST(Loader, OrderedDeterministicAndSkipsBadImages) {
  test::TempDir dir;
  std::vector<Sample> samples;
  for (int i = 0; i < 23; ++i) {
    std::string p = dir / (std::to_string(i) + ".png");
    test::write_test_image(p, 30 + i, 20, static_cast<uint8_t>(i));
    samples.push_back({p, i % 3, {}});
  }
  write_file_atomic(dir / "broken.png", "not a png at all");
  samples.push_back({dir / "broken.png", 0, {}});
  VitImageConfig img;
  img.image_size = 16;
  LoaderOptions o;
  o.batch_size = 5;
  o.workers = 3;
  o.shuffle = true;
  o.augment = true;
  o.seed = 11;
  ImageBatchLoader a(samples, img, o), b(samples, img, o);
  a.start_epoch(2);
  b.start_epoch(2);
  ImageBatch x, y;
  size_t seen = 0, batches = 0;
  while (a.next(x)) {
    ASSERT_TRUE(b.next(y));
    EXPECT_EQ(x.indices, y.indices);
    EXPECT_EQ(x.pixels, y.pixels);  // same augmentation whatever the threads did
    seen += x.labels.size();
    ++batches;
  }
  EXPECT_EQ(batches, a.batches_per_epoch());
  EXPECT_EQ(seen, 23u);
  ASSERT_EQ(a.failures().size(), 1u);
  EXPECT_NE(a.failures()[0].find("broken.png"), std::string::npos);
  // resuming at batch 2 gives the same later batches
  ImageBatchLoader c(samples, img, o);
  a.start_epoch(3);
  c.start_epoch(3, 2);
  a.next(x), a.next(x), a.next(x);
  c.next(y);
  EXPECT_EQ(x.indices, y.indices);
  EXPECT_EQ(x.pixels, y.pixels);
  // data parallel: 2 shards of each batch, put together, are the batch (same images, same crops)
  LoaderOptions o0 = o, o1 = o;
  o0.shards = o1.shards = 2;
  o1.shard = 1;
  ImageBatchLoader s0(samples, img, o0), s1(samples, img, o1);
  a.start_epoch(4), s0.start_epoch(4), s1.start_epoch(4);
  ImageBatch p0, p1;
  for (size_t k = 0; k < a.batches_per_epoch(); ++k) {
    ASSERT_TRUE(a.next(x) && s0.next(p0) && s1.next(p1));
    std::vector<size_t> joined = p0.indices;
    joined.insert(joined.end(), p1.indices.begin(), p1.indices.end());
    EXPECT_EQ(joined, x.indices);
    std::vector<float> pixels = p0.pixels;
    pixels.insert(pixels.end(), p1.pixels.begin(), p1.pixels.end());
    EXPECT_EQ(pixels, x.pixels);
    EXPECT_GE(p0.indices.size() + p0.failed.size(),
              p1.indices.size() + p1.failed.size());  // the first share is the larger
  }
}

// Directories with a symlink loop, a dangling link and a FIFO: listed once, never followed
// forever or waited on; the unreadable entries are listed so that reading them reports them.
TEST(Dataset, LinkLoopsAndSpecialFilesAreListedNotFollowed) {
  test::TempDir dir;
  test::write_test_image(dir / "imgs/a/1.png", 8, 8, 1);
  test::write_test_image(dir / "imgs/b/2.png", 8, 8, 2);
  fs::create_directory_symlink(dir / "imgs", dir / "imgs/a/loop");   // a directory loop
  fs::create_symlink(dir / "imgs/self.jpg", dir / "imgs/self.jpg");  // a link to itself
  ASSERT_EQ(mkfifo((dir / "imgs/b/pipe.png").c_str(), 0644), 0);
  const std::vector<std::string> found = list_image_files(dir / "imgs");
  EXPECT_EQ(found, (std::vector<std::string>{dir / "imgs/a/1.png", dir / "imgs/b/2.png",
                                             dir / "imgs/b/pipe.png", dir / "imgs/self.jpg"}));
  std::vector<Sample> samples;
  for (const auto& f : found) samples.push_back({f, 0, {}});
  const std::vector<std::string> bad = unreadable_by_stat(samples);
  ASSERT_EQ(bad.size(), 2u);
  EXPECT_NE(bad[0].find("pipe.png: not a regular file"), std::string::npos) << bad[0];
  EXPECT_NE(bad[1].find("self.jpg"), std::string::npos) << bad[1];
  // a dataset folder with them: loaded, the bad entries in the split to be reported when read
  test::write_test_image(dir / "ds/train/x/1.png", 8, 8, 3);
  ASSERT_EQ(mkfifo((dir / "ds/train/x/pipe.png").c_str(), 0644), 0);
  fs::create_symlink(dir / "ds/train/x/loop.png", dir / "ds/train/x/loop.png");
  EXPECT_EQ(load_dataset(dir / "ds").train.size() + load_dataset(dir / "ds").val.size(), 3u);
}

TEST(Dataset, ReadablePolicy) {
  // none read: an error naming the source and the first files; over 1%: a warning; else quiet
  try {
    check_readable("the test split", "fi.jsonl", 2, {"a.jpg: gone", "b.jpg: gone"});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "fi.jsonl: none of the 2 images of the test split could be read (a.jpg: gone; b.jpg: "
              "gone)");
  }
  testing::internal::CaptureStderr();
  check_readable("the test split", "fi.jsonl", 50, {"a.jpg: gone"});
  check_readable("the test split", "fi.jsonl", 200, {"a.jpg: gone"});
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("warning: fi.jsonl: 1 of 50 images of the test split could not be read "
                     "(2.0%), e.g. a.jpg: gone"),
            std::string::npos)
      << err;
  EXPECT_EQ(err.find("of 200"), std::string::npos) << err;
}
