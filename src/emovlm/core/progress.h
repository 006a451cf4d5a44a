// Progress of long loops on stderr: a bar with rate and ETA on a terminal, and a plain line every
// few seconds otherwise (a run under nohup or `> log` shows its progress in the log).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace emovlm {

class Progress {
 public:
  enum class Style { Off, Bar, Lines };

  // total <= 0: unknown length (shows the count and the rate only).
  Progress(std::string label, int64_t total, std::string unit = "it");
  ~Progress();

  void advance(int64_t n = 1);
  // Shown after the counts (the loss, say).
  void set_postfix(const std::string& text) { postfix_ = text; }
  void finish();
  bool enabled() const { return style_ != Style::Off; }
  int64_t count() const { return count_; }
  double rate() const;  // units per second so far

  // The style of every progress from now on; by default a bar when stderr and stdout are
  // terminals, else lines. Off: --quiet.
  static void set_style_globally(Style style);
  static void set_enabled_globally(bool on) { set_style_globally(on ? Style::Bar : Style::Off); }
  // Seconds between two plain lines (default 30, or EMOVLM_PROGRESS_SECONDS).
  static void set_line_interval(double seconds);

 private:
  void draw_bar();
  void print_line(bool final);
  std::string counts() const;
  std::string label_, unit_, postfix_;
  int64_t total_ = 0, count_ = 0;
  Style style_ = Style::Off;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1:02:03" / "02:03"
std::string format_duration(double seconds);

}  // namespace emovlm
