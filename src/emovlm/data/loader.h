// Data loading on worker threads: an ordered prefetcher (tasks run in parallel, results come out
// in order, at most `prefetch` ahead), and the image-classification batch loader built on it with
// the teacher's augmentation (RandomResizedCrop + horizontal flip, seeded per image and epoch)
// or evaluation transform (Resize + CenterCrop). Unreadable images are skipped and reported.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "emovlm/data/dataset.h"
#include "emovlm/image/preprocess.h"

namespace emovlm {

// Runs task(i) for i in [0, n) on `workers` threads and hands the results out in order.
template <typename T>
class OrderedPrefetcher {
 public:
  OrderedPrefetcher(size_t n, std::function<T(size_t)> task, int workers, size_t prefetch)
      : n_(n), task_(std::move(task)), prefetch_(std::max<size_t>(1, prefetch)) {
    const int w = std::max(1, workers);
    for (int i = 0; i < w; ++i) threads_.emplace_back([this] { work(); });
  }
  ~OrderedPrefetcher() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  // The next result in order; false when all n were handed out. Rethrows a task's exception.
  bool next(T& out) {
    std::unique_lock<std::mutex> l(mu_);
    if (consumed_ >= n_) return false;
    cv_.wait(l, [&] { return done_.count(consumed_) || errors_.count(consumed_); });
    if (errors_.count(consumed_)) std::rethrow_exception(errors_[consumed_]);
    out = std::move(done_[consumed_]);
    done_.erase(consumed_);
    ++consumed_;
    cv_.notify_all();
    return true;
  }

 private:
  void work() {
    while (true) {
      size_t i;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l,
                 [&] { return stop_ || (next_task_ < n_ && next_task_ < consumed_ + prefetch_); });
        if (stop_) return;
        i = next_task_++;
      }
      try {
        T r = task_(i);
        std::lock_guard<std::mutex> l(mu_);
        done_.emplace(i, std::move(r));
      } catch (...) {
        std::lock_guard<std::mutex> l(mu_);
        errors_.emplace(i, std::current_exception());
      }
      cv_.notify_all();
    }
  }
  size_t n_;
  std::function<T(size_t)> task_;
  size_t prefetch_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<size_t, T> done_;
  std::map<size_t, std::exception_ptr> errors_;
  size_t next_task_ = 0, consumed_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// torchvision's RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)) box, then the resize,
// and a horizontal flip with probability 1/2; all draws from rng.
RgbImage random_resized_crop_flip(const RgbImage& image, int size, SplitMix64& rng,
                                  Filter filter = Filter::Bilinear);

struct LoaderOptions {
  int64_t batch_size = 10;
  int workers = 2;
  size_t prefetch = 4;  // batches
  bool shuffle = false;
  bool augment = false;  // RandomResizedCrop + flip (training); else Resize + CenterCrop
  uint64_t seed = 0;
  // Data parallelism: this process reads part `shard` of `shards` of every batch (contiguous
  // parts, the first batch_size % shards one image larger), the others the rest.
  int shard = 0, shards = 1;
};

struct ImageBatch {
  std::vector<float> pixels;  // [n, 3, S, S]
  std::vector<int64_t> labels;
  std::vector<size_t> indices;      // into the sample list
  std::vector<std::string> failed;  // unreadable images skipped in this batch (path: reason)
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

class ImageBatchLoader {
 public:
  ImageBatchLoader(std::vector<Sample> samples, VitImageConfig image, LoaderOptions options);
  // Starts an epoch (its order and augmentation derive from seed and epoch only), skipping the
  // first `skip` batches (resuming).
  void start_epoch(int64_t epoch, size_t skip = 0);
  bool next(ImageBatch& batch);
  size_t batches_per_epoch() const;
  const std::vector<Sample>& samples() const { return samples_; }
  // Every unreadable image met so far.
  const std::vector<std::string>& failures() const { return failures_; }

 private:
  ImageBatch build(size_t batch_index) const;
  std::vector<Sample> samples_;
  VitImageConfig image_;
  LoaderOptions opt_;
  std::vector<size_t> order_;
  int64_t epoch_ = 0;
  size_t skip_ = 0;
  std::unique_ptr<OrderedPrefetcher<ImageBatch>> pf_;
  std::vector<std::string> failures_;
};

// Image files decoded and capped as VLM inputs (decode_capped) on worker threads, ahead of their
// use, handed out in order in groups of up to `group`: run(images, indices) for each group, and
// failed(index, error) in the place of a file that cannot be read (after the group before it).
void for_each_image_group(
    const std::vector<std::string>& paths, int cap_long_side, size_t group,
    const std::function<void(std::vector<RgbImage>& images, const std::vector<size_t>& indices)>&
        run,
    const std::function<void(size_t index, const std::string& error)>& failed);

}  // namespace emovlm
