// File helpers: atomic writes and mapping.
#include <gtest/gtest.h>

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
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
