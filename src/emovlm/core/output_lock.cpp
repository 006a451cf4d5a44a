// Output locks: flock(2) on a lock file that records the holder.
#include "emovlm/core/output_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/paths.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {
std::string& description() {
  static std::string d = "emovlm";
  return d;
}

std::string read_holder(int fd) {
  char buf[512];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "another process";
  std::string s(buf, static_cast<size_t>(n));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}
}  // namespace

void set_process_description(const std::string& d) {
  description() = d;
}
const std::string& process_description() {
  return description();
}

OutputLock::OutputLock(const std::string& out, Kind kind) : out_(out) {
  if (kind == Kind::Directory) {
    created_folder_ = !is_directory(out);
    make_dirs(out);
    lock_path_ = (fs::path(out) / ".emovlm.lock").string();
  } else {
    make_dirs(parent_folder(out));
    lock_path_ = out + ".lock";
    remove_on_release_ = true;
  }
  // A file lock whose file another holder unlinks in between would lock a deleted inode: after
  // taking the lock, the path must still name the locked file, else take it again.
  for (int attempt = 0; attempt < 100; ++attempt) {
    fd_ = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
      throw Error(cat(lock_path_, ": cannot create the output lock: ", std::strerror(errno)));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      std::string holder = read_holder(fd_);
      ::close(fd_);
      fd_ = -1;
      if (err == EWOULDBLOCK)
        throw Error(cat(out, ": another process is writing this output (", holder,
                        "); wait for it to finish or choose another --out"));
      throw Error(cat(lock_path_, ": cannot lock: ", std::strerror(err)));
    }
    struct stat a, b;
    if (::fstat(fd_, &a) == 0 && ::stat(lock_path_.c_str(), &b) == 0 && a.st_ino == b.st_ino &&
        a.st_dev == b.st_dev)
      break;
    ::close(fd_);
    fd_ = -1;
  }
  if (fd_ < 0) throw Error(cat(lock_path_, ": cannot lock (the lock file keeps changing)"));
  const std::string who = cat("pid ", ::getpid(), ": ", description(), "\n");
  if (::ftruncate(fd_, 0) == 0) {
    ssize_t ignored = ::pwrite(fd_, who.data(), who.size(), 0);
    (void)ignored;
  }
  if (kind == Kind::Directory)
    remove_stale_temporaries(out);
  else
    remove_stale_temporaries(parent_folder(out), fs::path(out).filename().string());
}

OutputLock::~OutputLock() {
  if (fd_ < 0) return;
  bool remove_folder = false;
  if (created_folder_) {
    std::error_code ec;
    fs::directory_iterator it(out_, ec), end;
    remove_folder = !ec;
    for (; remove_folder && it != end; it.increment(ec))
      if (ec || it->path().filename() != ".emovlm.lock") remove_folder = false;
  }
  // unlinked while still held: no one else can hold it
  if (remove_on_release_ || remove_folder) ::unlink(lock_path_.c_str());
  ::close(fd_);
  if (remove_folder) ::rmdir(out_.c_str());  // fails harmlessly if another writer got in since
}

int remove_stale_temporaries(const std::string& dir, const std::string& name) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string f = e.path().filename().string();
    // ".NAME.tmp.XXXXXX", as AtomicFile names them
    const size_t t = f.rfind(".tmp.");
    if (f.size() < 2 || f[0] != '.' || t == std::string::npos || t < 1 || f.size() - (t + 5) != 6)
      continue;
    if (!name.empty() && f.substr(1, t - 1) != name) continue;
    if (e.is_regular_file(ec) && ::unlink(e.path().c_str()) == 0) ++n;
  }
  return n;
}

}  // namespace emovlm
