// Batch loader and augmentation.
#include "emovlm/data/loader.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "emovlm/core/error.h"
#include "emovlm/image/resample.h"

namespace emovlm {

RgbImage random_resized_crop_flip(const RgbImage& img, int size, SplitMix64& rng, Filter filter) {
  const int H = img.height, W = img.width;
  const double area = static_cast<double>(H) * W;
  const double lr0 = std::log(3.0 / 4.0), lr1 = std::log(4.0 / 3.0);
  int top = 0, left = 0, h = H, w = W;
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * (0.08 + rng.uniform() * (1.0 - 0.08));
    const double ar = std::exp(lr0 + rng.uniform() * (lr1 - lr0));
    const int cw = static_cast<int>(std::lround(std::sqrt(target * ar)));
    const int ch = static_cast<int>(std::lround(std::sqrt(target / ar)));
    if (cw > 0 && cw <= W && ch > 0 && ch <= H) {
      top = static_cast<int>(rng.below(H - ch + 1));
      left = static_cast<int>(rng.below(W - cw + 1));
      h = ch, w = cw;
      found = true;
    }
  }
  if (!found) {  // torchvision's fallback: the central crop at the nearest allowed ratio
    const double in_ratio = static_cast<double>(W) / H;
    if (in_ratio < 3.0 / 4.0)
      w = W, h = static_cast<int>(std::lround(W / (3.0 / 4.0)));
    else if (in_ratio > 4.0 / 3.0)
      h = H, w = static_cast<int>(std::lround(H * (4.0 / 3.0)));
    else
      w = W, h = H;
    h = std::min(h, H), w = std::min(w, W);
    top = (H - h) / 2, left = (W - w) / 2;
  }
  RgbImage out = resize(crop(img, left, top, w, h), size, size, filter);
  if (rng.uniform() < 0.5) {
    for (int y = 0; y < size; ++y) {
      uint8_t* r = out.row(y);
      for (int x = 0; x < size / 2; ++x)
        for (int c = 0; c < 3; ++c) std::swap(r[3 * x + c], r[3 * (size - 1 - x) + c]);
    }
  }
  return out;
}

ImageBatchLoader::ImageBatchLoader(std::vector<Sample> samples, VitImageConfig image,
                                   LoaderOptions options)
    : samples_(std::move(samples)), image_(image), opt_(options) {
  if (samples_.empty()) throw Error("data loader: no images");
  if (opt_.batch_size <= 0)
    throw Error(cat("data loader: batch size must be positive, got ", opt_.batch_size));
}

size_t ImageBatchLoader::batches_per_epoch() const {
  return (samples_.size() + static_cast<size_t>(opt_.batch_size) - 1) /
         static_cast<size_t>(opt_.batch_size);
}

void ImageBatchLoader::start_epoch(int64_t epoch, size_t skip) {
  pf_.reset();
  epoch_ = epoch;
  skip_ = skip;
  order_.resize(samples_.size());
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = i;
  if (opt_.shuffle) {
    SplitMix64 rng(mix_seed(opt_.seed, static_cast<uint64_t>(epoch), 0xE90C));
    shuffle_in_place(order_, rng);
  }
  const size_t n = batches_per_epoch() > skip ? batches_per_epoch() - skip : 0;
  pf_ = std::make_unique<OrderedPrefetcher<ImageBatch>>(
      n, [this](size_t i) { return build(i + skip_); }, opt_.workers, opt_.prefetch);
}

ImageBatch ImageBatchLoader::build(size_t b) const {
  ImageBatch batch;
  const size_t S = static_cast<size_t>(image_.image_size), plane = 3 * S * S;
  size_t begin = b * static_cast<size_t>(opt_.batch_size);
  size_t end = std::min(order_.size(), begin + static_cast<size_t>(opt_.batch_size));
  if (opt_.shards > 1) {  // this process's part of the batch
    const size_t n = end - begin, k = static_cast<size_t>(opt_.shards),
                 r = static_cast<size_t>(opt_.shard);
    begin += r * (n / k) + std::min(r, n % k);
    end = begin + n / k + (r < n % k ? 1 : 0);
  }
  batch.pixels.reserve((end - begin) * plane);
  for (size_t k = begin; k < end; ++k) {
    const size_t idx = order_[k];
    const Sample& s = samples_[idx];
    try {
      RgbImage img = decode_image_file(s.path);
      RgbImage sized;
      if (opt_.augment) {
        SplitMix64 rng(mix_seed(opt_.seed, static_cast<uint64_t>(epoch_), idx + 1));
        sized = random_resized_crop_flip(img, static_cast<int>(S), rng, image_.resample);
      } else {
        sized = vit_geometry(img, image_);
      }
      const size_t off = batch.pixels.size();
      batch.pixels.resize(off + plane);
      normalize_chw(sized, image_.image_mean, image_.image_std, 1.0 / 255.0,
                    batch.pixels.data() + off);
      batch.labels.push_back(s.label);
      batch.indices.push_back(idx);
    } catch (const Error& e) {
      batch.failed.push_back(e.what());
    }
  }
  return batch;
}

bool ImageBatchLoader::next(ImageBatch& batch) {
  if (!pf_) throw Error("data loader: start_epoch() first");
  if (!pf_->next(batch)) return false;
  failures_.insert(failures_.end(), batch.failed.begin(), batch.failed.end());
  return true;
}

void for_each_image_group(
    const std::vector<std::string>& paths, int cap_long_side, size_t group,
    const std::function<void(std::vector<RgbImage>&, const std::vector<size_t>&)>& run,
    const std::function<void(size_t, const std::string&)>& failed) {
  group = std::max<size_t>(1, group);
  const int workers = static_cast<int>(std::min<size_t>(
      std::max<size_t>(1, paths.size()), std::max(1u, std::thread::hardware_concurrency())));
  OrderedPrefetcher<CappedImage> decoded(
      paths.size(), [&](size_t i) { return decode_capped(paths[i], cap_long_side); }, workers,
      2 * group);
  std::vector<RgbImage> images;
  std::vector<size_t> indices;
  auto flush = [&] {
    if (images.empty()) return;
    run(images, indices);
    images.clear();
    indices.clear();
  };
  CappedImage d;
  for (size_t i = 0; decoded.next(d); ++i) {
    if (!d.error.empty()) {
      flush();
      failed(i, d.error);
      continue;
    }
    images.push_back(std::move(d.image));
    indices.push_back(i);
    if (images.size() == group) flush();
  }
  flush();
}

}  // namespace emovlm
