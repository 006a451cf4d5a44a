// File helpers: whole-file reads, mmap, atomic writes.
#include "emovlm/core/files.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "emovlm/core/error.h"

namespace emovlm {

namespace fs = std::filesystem;

static std::string errno_str() {
  return std::strerror(errno);
}

std::string read_file(const std::string& path) {
  // O_NONBLOCK and the regular-file check: a FIFO or a device named where a file belongs is an
  // error, not a read that waits forever
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(cat(path, ": cannot open: ", errno_str()));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(cat(path, ": not a regular file"));
  }
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string e = errno_str();
      ::close(fd);
      throw Error(cat(path, ": read error: ", e));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

MappedFile::MappedFile(const std::string& path) : path_(path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below as not a regular
  // file)
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(cat(path, ": cannot open: ", errno_str()));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::string e = errno_str();
    ::close(fd);
    throw Error(cat(path, ": cannot stat: ", e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(cat(path, ": not a regular file"));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      std::string e = errno_str();
      ::close(fd);
      throw Error(cat(path, ": mmap failed: ", e));
    }
    data_ = static_cast<uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  fs::path p(path);
  std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  std::string templ = dir + "/." + p.filename().string() + ".tmp.XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0)
    throw Error(cat(path, ": cannot create a temporary file in ", dir, ": ", errno_str()));
  tmp_path_ = buf.data();
  ::fchmod(fd_, 0644);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_path_.empty()) ::unlink(tmp_path_.c_str());
}

void AtomicFile::write(const void* data, size_t size) {
  if (fd_ < 0) throw Error(cat(path_, ": write after commit"));
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(cat(path_, ": write failed: ", errno_str()));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error(cat(path_, ": committed twice"));
  if (::fsync(fd_) != 0) throw Error(cat(path_, ": fsync failed: ", errno_str()));
  if (::close(fd_) != 0) {
    fd_ = -1;
    throw Error(cat(path_, ": close failed: ", errno_str()));
  }
  fd_ = -1;
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0)
    throw Error(cat(path_, ": cannot rename the temporary file into place: ", errno_str()));
  committed_ = true;
  fs::path p(path_);
  std::string dir = p.has_parent_path() ? p.parent_path().string() : ".";
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  AtomicFile f(path);
  f.write(contents);
  f.commit();
}

uint64_t fnv1a64(const void* data, size_t size, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

uint64_t hash_file(const std::string& path) {
  MappedFile m(path);
  return fnv1a64(m.data(), m.size());
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

namespace {
int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  return ::remove(path);
}
}  // namespace

void remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    throw Error(cat(path, ": cannot remove: ", std::strerror(errno)));
  }
  if (::nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
    throw Error(cat(path, ": cannot remove: ", std::strerror(errno)));
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) throw Error(cat(path, ": cannot create directory: ", ec.message()));
}

}  // namespace emovlm
