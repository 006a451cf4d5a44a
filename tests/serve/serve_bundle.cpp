// The server tests' bundle (see serve_bundle.h).
#include "serve_bundle.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/data/labels.h"
#include "emovlm/image/image.h"
#include "emovlm/pipeline/extract.h"
#include "emovlm/pipeline/predictor.h"
#include "emovlm/train/distill.h"
#include "emovlm/train/teacher.h"

namespace emovlm::test {

namespace fs = std::filesystem;

namespace {

// ROOT/{train,test}/<mikels8 class>/k.png, each class tinted by its own hue, sizes differing.
void make_dataset(const std::string& root, int per_class) {
  LabelSet ls = LabelSet::from_spec("mikels8");
  const char* splits[] = {"train", "test"};
  for (int si = 0; si < 2; ++si)
    for (int c = 0; c < ls.size(); ++c)
      for (int k = 0; k < per_class; ++k) {
        RgbImage img(40 + 3 * k, 36);
        for (int y = 0; y < img.height; ++y)
          for (int x = 0; x < img.width; ++x) {
            uint8_t* p = img.row(y) + 3 * x;
            p[0] = static_cast<uint8_t>(30 * c + x);
            p[1] = static_cast<uint8_t>(255 - 30 * c + y);
            p[2] = static_cast<uint8_t>((x * y + k * 17 + 101 * si) % 256);
          }
        const std::string d = root + "/" + splits[si] + "/" + ls.labels[c];
        fs::create_directories(d);
        write_image_file(d + "/" + std::to_string(k) + ".png", img);
      }
}

}  // namespace

std::string make_serve_bundle(const std::string& dir) {
  const std::string bundle = dir + "/bundle";
  if (file_exists(bundle + "/bundle.json")) return bundle;
  fs::create_directories(dir);
  // one maker at a time (tests run in parallel); the others wait and find it made
  const std::string lock = dir + "/.lock";
  const int fd = ::open(lock.c_str(), O_CREAT | O_RDWR, 0644);
  if (fd < 0) throw Error(cat(lock, ": cannot open"));
  ::flock(fd, LOCK_EX);
  try {
    if (!file_exists(bundle + "/bundle.json")) {
      const std::string qwen = std::string(EMOVLM_TEST_DATA_DIR) + "/reference/qwen2vl_tiny";
      make_dataset(dir + "/data", 2);
      TeacherOptions t;
      t.data = dir + "/data";
      t.init = std::string(EMOVLM_TEST_DATA_DIR) + "/reference/vit_tiny";
      t.out = dir + "/teacher";
      t.dataset.labels = "mikels8";
      t.epochs = 1;
      t.batch_size = 4;
      train_teacher(t);
      ExtractOptions x;
      x.vlm = qwen;
      x.teacher = t.out;
      x.data = t.data;
      x.split = "train";
      x.out = dir + "/cache";
      x.dataset.labels = "mikels8";
      x.dtype = ComputeDtype::f32;
      x.device = ComputeDevice::cpu();
      extract_features(x);
      DistillOptions d;
      d.cache = x.out;
      d.out = dir + "/distill";
      d.hidden = {16};
      d.epochs = 1;
      d.compute_dtype = ComputeDtype::f32;
      train_distill_head(d);
      GateOptions g;
      g.cache = d.cache;
      g.distill = d.out;
      g.out = dir + "/gate";
      g.epochs = 1;
      train_gate(g);
      BundleSpec b;
      b.vlm = qwen;
      b.distill = d.out;
      b.gate = g.out;
      b.dtype = ComputeDtype::f32;
      write_bundle(bundle, b);
    }
  } catch (...) {
    ::flock(fd, LOCK_UN);
    ::close(fd);
    throw;
  }
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return bundle;
}

std::string serve_bundle() {
  const char* env = std::getenv("EMOVLM_SERVE_BUNDLE_DIR");
  return make_serve_bundle(env && *env ? env : EMOVLM_SERVE_FIXTURE_DIR);
}

}  // namespace emovlm::test
