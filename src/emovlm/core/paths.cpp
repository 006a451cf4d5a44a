// Stored paths: relative to the storing file's folder (see paths.h).
#include "emovlm/core/paths.h"

#include <filesystem>

namespace emovlm {

namespace fs = std::filesystem;

namespace {

fs::path absolute_normal(const fs::path& p) {
  return fs::absolute(p).lexically_normal();
}

// Whether `p` lies inside folder `dir` (both absolute and normalized).
bool inside(const fs::path& p, const fs::path& dir) {
  auto d = dir.begin(), q = p.begin();
  for (; d != dir.end(); ++d, ++q) {
    if (d->empty()) continue;  // the empty last element of "a/b/"
    if (q == p.end() || *q != *d) return false;
  }
  return true;
}

}  // namespace

std::string parent_folder(const std::string& file) {
  fs::path p = fs::path(file).parent_path();
  return p.empty() ? "." : p.string();
}

std::string store_path(const std::string& path, const std::string& storing_file) {
  const fs::path base = absolute_normal(parent_folder(storing_file));
  const fs::path target = absolute_normal(path);
  if (fs::path(path).is_absolute() && !inside(target, base)) return target.string();
  fs::path rel = target.lexically_relative(base);
  if (rel.empty()) return target.string();  // no relative form (another root)
  return rel.string();
}

std::string resolve_stored_path(const std::string& stored, const std::string& storing_file) {
  if (stored.empty() || fs::path(stored).is_absolute()) return stored;
  return (fs::path(parent_folder(storing_file)) / stored).lexically_normal().string();
}

std::string path_identity(const std::string& path) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(fs::absolute(path), ec);
  return ec ? absolute_normal(path).string() : c.string();
}

}  // namespace emovlm
