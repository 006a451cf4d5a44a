// Progress bar drawn on stderr, only when stdout is a terminal.
#include "emovlm/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>

namespace emovlm {

static std::atomic<int> g_enabled{-1};  // -1: follow the terminal

void Progress::set_enabled_globally(bool on) { g_enabled = on ? 1 : 0; }

std::string format_duration(double seconds) {
  if (seconds < 0 || seconds != seconds) return "--:--";
  long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total) {
  int g = g_enabled.load();
  enabled_ = g < 0 ? (isatty(STDOUT_FILENO) && isatty(STDERR_FILENO)) : g == 1;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  if (!finished_) finish();
}

double Progress::rate() const {
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return dt > 0 ? count_ / dt : 0.0;
}

void Progress::advance(int64_t n) {
  count_ += n;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (std::chrono::duration<double>(now - last_draw_).count() >= 0.1 || (total_ > 0 && count_ >= total_)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) {
    draw(true);
    std::fputc('\n', stderr);
    std::fflush(stderr);
  }
}

void Progress::draw(bool /*final*/) {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double r = elapsed > 0 ? count_ / elapsed : 0.0;
  std::string line = "\r" + label_ + " ";
  char buf[160];
  if (total_ > 0) {
    const int width = 24;
    double frac = std::min(1.0, static_cast<double>(count_) / total_);
    int filled = static_cast<int>(frac * width);
    line += "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
    double eta = r > 0 ? (total_ - count_) / r : -1;
    std::snprintf(buf, sizeof buf, "%lld/%lld %.1f %s/s elapsed %s eta %s", static_cast<long long>(count_),
                  static_cast<long long>(total_), r, unit_.c_str(), format_duration(elapsed).c_str(),
                  format_duration(eta).c_str());
  } else {
    std::snprintf(buf, sizeof buf, "%lld %.1f %s/s elapsed %s", static_cast<long long>(count_), r, unit_.c_str(),
                  format_duration(elapsed).c_str());
  }
  line += buf;
  if (!postfix_.empty()) line += " " + postfix_;
  line += "\x1b[K";
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace emovlm
