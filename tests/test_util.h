// Test helpers: where the reference fixtures are, and reading them without torch.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/image/image.h"

namespace emovlm::test {

// EMOVLM_REFERENCE_DIR points at another fixture directory of the same format; the default is
// the copy in tests/data/reference.
inline std::string reference_dir() {
  const char* env = std::getenv("EMOVLM_REFERENCE_DIR");
  if (env && *env) return env;
  return std::string(EMOVLM_TEST_DATA_DIR) + "/reference";
}

inline std::string ref_path(const std::string& rel) { return reference_dir() + "/" + rel; }

// A fresh scratch directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "emovlm-test-XXXXXX").string();
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    try {
      remove_tree(path_);
    } catch (...) {
    }
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes a w x h image whose samples are v + i % 7 (parents created; the format from the extension).
inline void write_test_image(const std::string& path, int w, int h, uint8_t v) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  RgbImage img(w, h);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(v + i % 7);
  write_image_file(path, img);
}

// Copies a directory tree with cp(1): std::filesystem::copy is one of the libstdc++ filesystem
// functions that the pip torch's libtorch.so carries its own copy of (see remove_tree).
inline void copy_tree(const std::string& from, const std::string& to) {
  const std::string cmd = "cp -R '" + from + "' '" + to + "'";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
}

inline std::vector<float> as_floats(const TensorView& t) {
  EXPECT_EQ(t.dtype, DType::F32) << t.name;
  std::vector<float> v(t.nbytes / 4);
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

// max |a - b| over max |b|
inline double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return den > 0 ? num / den : num;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

// Runs the rest of a scope with the working directory set to `dir` (as a user's shell would be),
// restoring it at the end, so that tests can pass relative paths as users do.
class InDir {
 public:
  explicit InDir(const std::string& dir) : old_(std::filesystem::current_path()) { std::filesystem::current_path(dir); }
  ~InDir() { std::filesystem::current_path(old_); }
  InDir(const InDir&) = delete;
  InDir& operator=(const InDir&) = delete;

 private:
  std::filesystem::path old_;
};

}  // namespace emovlm::test
