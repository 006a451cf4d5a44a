// Test helpers: where the reference fixtures are, and reading them without torch.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/image/image.h"
#include "emovlm/image/preprocess.h"

namespace emovlm::test {

// EMOVLM_REFERENCE_DIR points at another fixture directory of the same format; the default is
// the copy in tests/data/reference.
inline std::string reference_dir() {
  const char* env = std::getenv("EMOVLM_REFERENCE_DIR");
  if (env && *env) return env;
  return std::string(EMOVLM_TEST_DATA_DIR) + "/reference";
}

inline std::string ref_path(const std::string& rel) {
  return reference_dir() + "/" + rel;
}

// Skips the running test, naming the file, when a fixture file is absent: a fixture directory
// may hold a subset of the files, and the tests that need the others skip.
#define EMOVLM_NEED_FIXTURE(rel)                                  \
  do {                                                            \
    const std::string need_path_ = ::emovlm::test::ref_path(rel); \
    if (!::emovlm::file_exists(need_path_))                       \
      GTEST_SKIP() << "fixture file missing: " << need_path_;     \
  } while (0)

// The fixture's images as cases.json lists them (name, file under images/, size).
struct RefImage {
  std::string name, path;
  int width = 0, height = 0;
};
inline std::vector<RefImage> reference_images() {
  std::vector<RefImage> out;
  const json cases = read_json_file(ref_path("qwen2vl_tiny/cases.json"));
  for (const auto& im : cases.at("images"))
    out.push_back({im.at("name").get<std::string>(),
                   ref_path("images/" + im.at("file").get<std::string>()), im.value("width", 0),
                   im.value("height", 0)});
  return out;
}

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

// Writes a w x h image whose samples are v + i % 7 (parents created; the format from the
// extension).
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

// max |a - b| over max |b|. Arrays of different sizes, or a NaN anywhere, give +infinity (and a
// failure naming the sizes): an empty or truncated output never "matches".
inline double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) {
    ADD_FAILURE() << "compared arrays differ in size: " << a.size() << " vs " << b.size();
    return std::numeric_limits<double>::infinity();
  }
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - b[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    num = std::max(num, d);
    den = std::max(den, std::fabs(double(b[i])));
  }
  return den > 0 ? num / den : num;
}

// max |a - b|, with the same rules for sizes and NaN.
inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) {
    ADD_FAILURE() << "compared arrays differ in size: " << a.size() << " vs " << b.size();
    return std::numeric_limits<double>::infinity();
  }
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - b[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    m = std::max(m, d);
  }
  return m;
}

// Runs the rest of a scope with the working directory set to `dir` (as a user's shell would be),
// restoring it at the end, so that tests can pass relative paths as users do.
class InDir {
 public:
  explicit InDir(const std::string& dir) : old_(std::filesystem::current_path()) {
    std::filesystem::current_path(dir);
  }
  ~InDir() { std::filesystem::current_path(old_); }
  InDir(const InDir&) = delete;
  InDir& operator=(const InDir&) = delete;

 private:
  std::filesystem::path old_;
};

// A computed array against a fixture tensor: the shapes must agree (leading sizes of 1 aside,
// as a batch of one) or the result is +infinity and a failure naming both shapes.
inline std::vector<int64_t> squeeze_leading(std::vector<int64_t> s) {
  while (s.size() > 1 && s.front() == 1) s.erase(s.begin());
  return s;
}
inline double max_abs_diff(const FloatArray& got, const TensorView& want) {
  if (squeeze_leading(got.shape) != squeeze_leading(want.shape)) {
    ADD_FAILURE() << want.name << ": shape " << ::testing::PrintToString(got.shape) << " computed, "
                  << ::testing::PrintToString(want.shape) << " expected";
    return std::numeric_limits<double>::infinity();
  }
  return max_abs_diff(got.data, as_floats(want));
}

// The report shape every evaluation shares (pipeline/evaluate.h): labels, images, and per model
// a classification report over those labels; reports made from images also name the split and
// the images left out.
inline void expect_evaluation_shape(const json& r, const std::vector<std::string>& models,
                                    bool from_images) {
  ASSERT_TRUE(r.contains("labels") && r["labels"].is_array()) << r.dump();
  ASSERT_TRUE(r.contains("images") && r["images"].is_number_integer()) << r.dump();
  ASSERT_TRUE(r.contains("models") && r["models"].is_object()) << r.dump();
  EXPECT_EQ(r["models"].size(), models.size()) << r["models"].dump();
  for (const std::string& m : models) {
    ASSERT_TRUE(r["models"].contains(m)) << m;
    const json& c = r["models"][m];
    for (const char* k :
         {"accuracy", "macro_f1", "per_class", "confusion", "labels", "n", "unparsable"})
      EXPECT_TRUE(c.contains(k)) << m << " lacks " << k;
    EXPECT_EQ(c["labels"], r["labels"]) << m;
    EXPECT_LE(c["n"].get<int64_t>(), r["images"].get<int64_t>()) << m;
  }
  for (const char* k : {"data", "split", "unreadable", "unreadable_images", "resumed"})
    EXPECT_EQ(r.contains(k), from_images) << k;
  if (from_images) EXPECT_EQ(r["unreadable"].get<size_t>(), r["unreadable_images"].size());
}

// Expects f to throw an Error whose message holds every one of `parts`.
template <typename F>
void expect_error_naming(F f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << p << " in: " << msg;
  }
}

}  // namespace emovlm::test
