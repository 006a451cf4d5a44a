// File helpers: atomic writes and mapping.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "test_util.h"

using namespace emovlm;

TEST(Files, AtomicFileCommitReplaces) {
  test::TempDir dir;
  write_file_atomic(dir / "f.txt", "old");
  {
    AtomicFile f(dir / "f.txt");
    f.write("new contents");
    EXPECT_EQ(read_file(dir / "f.txt"), "old");  // not visible before commit
    f.commit();
  }
  EXPECT_EQ(read_file(dir / "f.txt"), "new contents");
}

TEST(Files, AtomicFileWithoutCommitLeavesNothing) {
  test::TempDir dir;
  {
    AtomicFile f(dir / "g.txt");
    f.write("partial");
  }
  EXPECT_FALSE(file_exists(dir / "g.txt"));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Files, MappedFile) {
  test::TempDir dir;
  write_file_atomic(dir / "m.bin", "abcdef");
  MappedFile m(dir / "m.bin");
  ASSERT_EQ(m.size(), 6u);
  EXPECT_EQ(m.data()[2], 'c');
  m.mutable_data()[0] = 'z';  // copy-on-write: the file is untouched
  EXPECT_EQ(read_file(dir / "m.bin"), "abcdef");
  EXPECT_THROW(MappedFile(dir / "missing"), Error);
  EXPECT_THROW(MappedFile(dir.path()), Error);
}

TEST(Files, RemoveTree) {
  test::TempDir dir;
  make_dirs(dir / "a/b/c");
  write_file_atomic(dir / "a/b/c/f.txt", "x");
  write_file_atomic(dir / "a/g.txt", "y");
  std::filesystem::create_symlink(dir.path(), dir / "a/b/link");  // not followed
  remove_tree(dir / "a");
  EXPECT_FALSE(std::filesystem::exists(dir / "a"));
  EXPECT_TRUE(std::filesystem::exists(dir.path()));
  remove_tree(dir / "missing");  // no error
  write_file_atomic(dir / "file", "z");
  remove_tree(dir / "file");
  EXPECT_FALSE(file_exists(dir / "file"));
}

TEST(Files, SpecialFilesAreRefusedNotWaitedOn) {
  test::TempDir dir;
  ASSERT_EQ(mkfifo((dir / "fifo.jpg").c_str(), 0644), 0);
  // opening a FIFO for reading would wait for a writer forever
  EXPECT_THROW(read_file(dir / "fifo.jpg"), Error);
  EXPECT_THROW(MappedFile(dir / "fifo.jpg"), Error);
  try {
    read_file(dir / "fifo.jpg");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fifo.jpg: not a regular file"), std::string::npos)
        << e.what();
  }
  std::filesystem::create_symlink(dir / "loop.jpg", dir / "loop.jpg");
  EXPECT_THROW(read_file(dir / "loop.jpg"), Error);
  EXPECT_THROW(MappedFile(dir / "loop.jpg"), Error);
}

TEST(Files, JsonFirstDifferenceNamesTheField) {
  const json a = {{"vlm", {{"files", {{{"name", "m.safetensors"}, {"hash", "aa"}}}}}},
                  {"split", "val"}};
  json b = a;
  EXPECT_EQ(json_first_difference(a, b), "");
  b["split"] = "test";
  EXPECT_EQ(json_first_difference(a, b), "/split: \"val\" (now \"test\")");
  b = a;
  b["vlm"]["files"][0]["hash"] = "bb";
  EXPECT_EQ(json_first_difference(a, b), "/vlm/files/0/hash: \"aa\" (now \"bb\")");
  b = a;
  b.erase("split");
  EXPECT_EQ(json_first_difference(a, b), "/split: \"val\" (now absent)");
  b = a;
  b["dtype"] = "bf16";
  EXPECT_EQ(json_first_difference(a, b), "/dtype: absent (now \"bf16\")");
  EXPECT_EQ(json_first_difference(json::array({1, 2}), json::array({1})), "/: 2 entries (now 1)");
}
