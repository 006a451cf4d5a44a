// The shared decoded-pixel budget (see pixel_budget.h).
#include "emovlm/image/pixel_budget.h"

#include <utility>

#include "emovlm/core/error.h"

namespace emovlm {

PixelBudget::PixelBudget(int64_t capacity) : capacity_(capacity) {
  if (capacity <= 0)
    throw Error(cat("pixel budget: the capacity must be positive, not ", capacity));
}

std::optional<PixelBudget::Lease> PixelBudget::acquire(int64_t pixels,
                                                       std::chrono::milliseconds wait) {
  if (pixels < 0 || pixels > capacity_) return std::nullopt;
  std::unique_lock<std::mutex> l(mu_);
  if (!cv_.wait_for(l, wait, [&] { return used_ + pixels <= capacity_; })) return std::nullopt;
  used_ += pixels;
  return Lease(this, pixels);
}

int64_t PixelBudget::in_use() const {
  std::lock_guard<std::mutex> l(mu_);
  return used_;
}

void PixelBudget::give_back(int64_t pixels) {
  {
    std::lock_guard<std::mutex> l(mu_);
    used_ -= pixels;
  }
  cv_.notify_all();
}

PixelBudget::Lease::Lease(Lease&& other) noexcept
    : budget_(std::exchange(other.budget_, nullptr)), pixels_(std::exchange(other.pixels_, 0)) {}

PixelBudget::Lease& PixelBudget::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    budget_ = std::exchange(other.budget_, nullptr);
    pixels_ = std::exchange(other.pixels_, 0);
  }
  return *this;
}

PixelBudget::Lease::~Lease() {
  release();
}

void PixelBudget::Lease::shrink(int64_t to) {
  if (!budget_ || to >= pixels_) return;
  if (to < 0) to = 0;
  budget_->give_back(pixels_ - to);
  pixels_ = to;
}

}  // namespace emovlm
