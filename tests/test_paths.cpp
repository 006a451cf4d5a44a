// Stored paths: relative to the storing file's folder, resolved against it; identities of
// spellings.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "emovlm/core/paths.h"
#include "test_util.h"

using namespace emovlm;
namespace fs = std::filesystem;

TEST(Paths, StoredRelativeToTheStoringFilesFolder) {
  test::TempDir dir;
  test::InDir in(dir.path());
  EXPECT_EQ(store_path("FI/awe/a.jpg", "runs/inst.jsonl"), "../FI/awe/a.jpg");
  EXPECT_EQ(store_path("./FI/./awe/a.jpg", "runs/inst.jsonl"),
            "../FI/awe/a.jpg");  // spellings store alike
  EXPECT_EQ(store_path("runs/cache/x.jpg", "runs/inst.jsonl"), "cache/x.jpg");
  EXPECT_EQ(store_path("a.jpg", "inst.jsonl"), "a.jpg");
  // an absolute path inside the folder is stored relative; one outside stays absolute
  EXPECT_EQ(store_path(dir / "runs/b.jpg", "runs/inst.jsonl"), "b.jpg");
  EXPECT_EQ(store_path("/srv/data/FI/a.jpg", "runs/inst.jsonl"), "/srv/data/FI/a.jpg");
  EXPECT_EQ(store_path("/srv/data/../data/FI/a.jpg", "runs/inst.jsonl"), "/srv/data/FI/a.jpg");
}

TEST(Paths, ResolvedAgainstTheStoringFilesFolder) {
  EXPECT_EQ(resolve_stored_path("../FI/a.jpg", "runs/inst.jsonl"), "FI/a.jpg");
  EXPECT_EQ(resolve_stored_path("../FI/a.jpg", "/x/runs/inst.jsonl"), "/x/FI/a.jpg");
  EXPECT_EQ(resolve_stored_path("/abs/a.jpg", "runs/inst.jsonl"), "/abs/a.jpg");
  EXPECT_EQ(resolve_stored_path("a.jpg", "inst.jsonl"), "a.jpg");
  EXPECT_EQ(resolve_stored_path("", "runs/inst.jsonl"), "");
}

TEST(Paths, AStoredPathSurvivesMovingTheFolderAndChangingDirectory) {
  test::TempDir dir;
  test::write_test_image(dir / "FI/awe/a.png", 4, 4, 10);
  make_dirs(dir / "runs");
  {
    test::InDir in(dir.path());
    write_file_atomic("runs/list.txt", store_path("FI/awe/a.png", "runs/list.txt"));
  }
  fs::rename(dir / "runs", dir / "runs2");
  make_dirs(dir / "elsewhere");
  test::InDir in(dir / "elsewhere");
  const std::string file = "../runs2/list.txt";
  const std::string image = resolve_stored_path(read_file(file), file);
  EXPECT_EQ(image, "../FI/awe/a.png");
  EXPECT_TRUE(file_exists(image));
}

TEST(Paths, IdentityEqualForSpellingsOfOneFile) {
  test::TempDir dir;
  test::write_test_image(dir / "d/a.png", 4, 4, 10);
  fs::create_symlink(dir / "d", dir / "link");
  test::InDir in(dir.path());
  EXPECT_EQ(path_identity("d/a.png"), path_identity("./d/../d/a.png"));
  EXPECT_EQ(path_identity("d/a.png"), path_identity(dir / "d/a.png"));
  EXPECT_EQ(path_identity("d/a.png"), path_identity("link/a.png"));
  EXPECT_NE(path_identity("d/a.png"), path_identity("d/b.png"));
  EXPECT_EQ(parent_folder("a.jsonl"), ".");
  EXPECT_EQ(parent_folder("runs/a.jsonl"), "runs");
}
