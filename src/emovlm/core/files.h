// File helpers: read a whole file, memory-map a file, and write files atomically.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace emovlm {

// Reads the whole file; throws Error naming the path when it cannot.
std::string read_file(const std::string& path);
bool file_exists(const std::string& path);
bool is_directory(const std::string& path);

// A read-only view of a file mapped into memory (copy-on-write pages: writes through the
// pointer never reach the file). Empty files map to size 0 and a null pointer.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint8_t* mutable_data() { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Writes to a temporary file in the destination's directory; commit() flushes, fsyncs and
// renames it over the destination (and fsyncs the directory). Without commit() the temporary
// file is removed, so a crash or an exception never leaves a partial file under the final name.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void write(const std::string& s) { write(s.data(), s.size()); }
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// Convenience: atomically replaces `path` with `contents`.
void write_file_atomic(const std::string& path, const std::string& contents);

// FNV-1a 64 of bytes / of a whole file (content identity for caches; not cryptographic).
uint64_t fnv1a64(const void* data, size_t size, uint64_t seed = 0xcbf29ce484222325ull);
uint64_t hash_file(const std::string& path);
std::string hex64(uint64_t v);

// Creates the directory and its parents (no error when it exists).
void make_dirs(const std::string& path);

// Removes a file or a directory tree (no error when it does not exist); does not follow links.
// POSIX nftw rather than std::filesystem::remove_all: the pip torch's libtorch.so exports its own
// copy of remove_all, which the dynamic linker binds in its place and which crashes (seen with
// torch 2.11 on the GPU machine).
void remove_tree(const std::string& path);

}  // namespace emovlm
