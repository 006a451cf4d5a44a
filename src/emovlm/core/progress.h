// A progress bar with rate and ETA for long loops; silent when stdout is not a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace emovlm {

class Progress {
 public:
  // total <= 0: unknown length (shows the count and the rate only).
  Progress(std::string label, int64_t total, std::string unit = "it");
  ~Progress();

  void advance(int64_t n = 1);
  void set_postfix(const std::string& text) { postfix_ = text; }
  void finish();
  bool enabled() const { return enabled_; }
  int64_t count() const { return count_; }
  double rate() const;  // units per second so far

  // Overrides the terminal detection (tests, --quiet).
  static void set_enabled_globally(bool on);

 private:
  void draw(bool final);
  std::string label_, unit_, postfix_;
  int64_t total_ = 0, count_ = 0;
  bool enabled_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1:02:03" / "02:03"
std::string format_duration(double seconds);

}  // namespace emovlm
