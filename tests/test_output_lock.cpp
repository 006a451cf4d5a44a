// One writer per output: a second lock on the same output is refused, naming the holder.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/output_lock.h"
#include "test_util.h"

using namespace emovlm;

namespace {
// Whether a child process (a second writer, as another command would be) can take the lock.
bool child_can_lock(const std::string& out, OutputLock::Kind kind, std::string* message) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    int rc = 0;
    try {
      OutputLock l(out, kind);
    } catch (const Error& e) {
      ssize_t w = write(fds[1], e.what(), std::strlen(e.what()));
      (void)w;
      rc = 1;
    }
    close(fds[1]);
    _exit(rc);
  }
  close(fds[1]);
  char buf[1024];
  ssize_t n = read(fds[0], buf, sizeof buf);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (message) *message = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
}  // namespace

TEST(OutputLock, ASecondWriterIsRefusedNamingTheHolder) {
  test::TempDir dir;
  set_process_description("emovlm extract --split test");
  {
    OutputLock held(dir / "cache", OutputLock::Kind::Directory);
    EXPECT_TRUE(is_directory(dir / "cache"));
    std::string msg;
    EXPECT_FALSE(child_can_lock(dir / "cache", OutputLock::Kind::Directory, &msg));
    EXPECT_NE(msg.find("another process is writing"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::to_string(getpid())), std::string::npos) << msg;
    EXPECT_NE(msg.find("emovlm extract --split test"), std::string::npos) << msg;
    // another output is free
    EXPECT_TRUE(child_can_lock(dir / "other", OutputLock::Kind::Directory, nullptr));
  }
  EXPECT_TRUE(child_can_lock(dir / "cache", OutputLock::Kind::Directory, nullptr));  // released
}

TEST(OutputLock, FileOutputsLockBesideThemAndCreateTheFolder) {
  test::TempDir dir;
  const std::string out = dir / "runs/new/report.json";
  {
    OutputLock held(out, OutputLock::Kind::File);
    EXPECT_TRUE(is_directory(dir / "runs/new"));
    EXPECT_TRUE(file_exists(out + ".lock"));
    EXPECT_FALSE(child_can_lock(out, OutputLock::Kind::File, nullptr));
  }
  EXPECT_FALSE(file_exists(out + ".lock"));  // no litter
  EXPECT_TRUE(child_can_lock(out, OutputLock::Kind::File, nullptr));
}

TEST(OutputLock, StaleTemporariesOfAKilledWriterAreRemoved) {
  test::TempDir dir;
  make_dirs(dir / "run");
  write_file_atomic(dir / "run/.checkpoint.safetensors.tmp.AbC123", "partial");
  write_file_atomic(dir / "run/.metrics.jsonl.tmp.x1y2z3", "partial");
  write_file_atomic(dir / "run/keep.tmp.txt", "not ours");
  write_file_atomic(dir / "run/.hidden", "not ours");
  { OutputLock held(dir / "run", OutputLock::Kind::Directory); }
  EXPECT_FALSE(file_exists(dir / "run/.checkpoint.safetensors.tmp.AbC123"));
  EXPECT_FALSE(file_exists(dir / "run/.metrics.jsonl.tmp.x1y2z3"));
  EXPECT_TRUE(file_exists(dir / "run/keep.tmp.txt"));
  EXPECT_TRUE(file_exists(dir / "run/.hidden"));
  // a file output removes only its own
  write_file_atomic(dir / ".r.json.tmp.aaaaaa", "partial");
  write_file_atomic(dir / ".s.json.tmp.bbbbbb", "partial");
  { OutputLock held(dir / "r.json", OutputLock::Kind::File); }
  EXPECT_FALSE(file_exists(dir / ".r.json.tmp.aaaaaa"));
  EXPECT_TRUE(file_exists(dir / ".s.json.tmp.bbbbbb"));
}

// A command that fails before writing its first output leaves no empty folder (holding only the
// lock) where its output would have been; a folder that was there before, or has output, stays.
TEST(OutputLock, AFolderItCreatedAndNothingWasWrittenToGoesWithIt) {
  test::TempDir dir;
  { OutputLock held(dir / "new/cache", OutputLock::Kind::Directory); }
  EXPECT_FALSE(is_directory(dir / "new/cache"));
  EXPECT_TRUE(is_directory(dir / "new"));  // (only the output's own folder goes)
  {
    OutputLock held(dir / "written", OutputLock::Kind::Directory);
    write_file_atomic(dir / "written/manifest.json", "{}");
  }
  EXPECT_TRUE(file_exists(dir / "written/manifest.json"));
  make_dirs(dir / "existing");
  { OutputLock held(dir / "existing", OutputLock::Kind::Directory); }
  EXPECT_TRUE(is_directory(dir / "existing"));
}
