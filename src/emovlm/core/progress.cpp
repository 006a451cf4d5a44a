// Progress on stderr: a redrawn bar on a terminal, plain lines in logs.
#include "emovlm/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace emovlm {

namespace {
std::atomic<int> g_style{-1};  // -1: follow the terminal
std::atomic<double> g_interval{-1};

double line_interval() {
  double s = g_interval.load();
  if (s > 0) return s;
  const char* env = std::getenv("EMOVLM_PROGRESS_SECONDS");
  const double e = env ? std::atof(env) : 0.0;
  return e > 0 ? e : 30.0;
}
}  // namespace

void Progress::set_style_globally(Style style) {
  g_style = static_cast<int>(style);
}
void Progress::set_line_interval(double seconds) {
  g_interval = seconds;
}

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
  const int g = g_style.load();
  if (g >= 0)
    style_ = static_cast<Style>(g);
  else
    style_ = isatty(STDOUT_FILENO) && isatty(STDERR_FILENO) ? Style::Bar : Style::Lines;
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
  if (style_ == Style::Off) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (style_ == Style::Bar) {
    if (since >= 0.1 || (total_ > 0 && count_ >= total_)) {
      last_draw_ = now;
      draw_bar();
    }
  } else if (since >= line_interval()) {
    last_draw_ = now;
    print_line(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (style_ == Style::Bar) {
    draw_bar();
    std::fputc('\n', stderr);
    std::fflush(stderr);
  } else if (style_ == Style::Lines &&
             std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count() >=
                 line_interval()) {
    print_line(true);  // a long loop's last figures (short ones stay out of the log)
  }
}

std::string Progress::counts() const {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double r = elapsed > 0 ? count_ / elapsed : 0.0;
  char buf[200];
  if (total_ > 0) {
    const double eta = r > 0 ? (total_ - count_) / r : -1;
    std::snprintf(buf, sizeof buf, "%lld/%lld %.1f %s/s elapsed %s eta %s",
                  static_cast<long long>(count_), static_cast<long long>(total_), r, unit_.c_str(),
                  format_duration(elapsed).c_str(), format_duration(eta).c_str());
  } else {
    std::snprintf(buf, sizeof buf, "%lld %.1f %s/s elapsed %s", static_cast<long long>(count_), r,
                  unit_.c_str(), format_duration(elapsed).c_str());
  }
  return buf;
}

void Progress::print_line(bool final) {
  std::string line = label_ + ": " + counts();
  if (!postfix_.empty()) line += " " + postfix_;
  if (final) line += " (done)";
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void Progress::draw_bar() {
  std::string line = "\r" + label_ + " ";
  if (total_ > 0) {
    const int width = 24;
    const double frac = std::min(1.0, static_cast<double>(count_) / total_);
    const int filled = static_cast<int>(frac * width);
    line += "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
  }
  line += counts();
  if (!postfix_.empty()) line += " " + postfix_;
  line += "\x1b[K";
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace emovlm
