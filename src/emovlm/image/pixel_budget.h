// A budget of decoded pixels shared by concurrent decoders (a server's requests): each reserves an
// image's declared size before its decoder allocates it (DecodeOptions::admit) and gives it back
// when done, so the pixels held at once, and so the memory, are bounded by the budget whatever
// the clients send.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

namespace emovlm {

class PixelBudget {
 public:
  explicit PixelBudget(int64_t capacity);

  // Pixels held until destroyed (or shrunk: an image kept after resizing holds less).
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();
    int64_t pixels() const { return pixels_; }
    void shrink(int64_t to);  // gives back pixels() - to (no-op when to >= pixels())
    void release() { shrink(0); }

   private:
    friend class PixelBudget;
    Lease(PixelBudget* budget, int64_t pixels) : budget_(budget), pixels_(pixels) {}
    PixelBudget* budget_ = nullptr;
    int64_t pixels_ = 0;
  };

  // Reserves `pixels`, waiting up to `wait` for others to give back enough; nullopt when the time
  // runs out. More than the whole capacity never fits: nullopt at once.
  std::optional<Lease> acquire(int64_t pixels, std::chrono::milliseconds wait);

  int64_t capacity() const { return capacity_; }
  int64_t in_use() const;

 private:
  void give_back(int64_t pixels);
  const int64_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int64_t used_ = 0;
};

}  // namespace emovlm
