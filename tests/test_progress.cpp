// Progress bar: counting, formatting, and silence when not on a terminal.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "emovlm/core/progress.h"

using namespace emovlm;

TEST(Progress, FormatDuration) {
  EXPECT_EQ(format_duration(0), "00:00");
  EXPECT_EQ(format_duration(65), "01:05");
  EXPECT_EQ(format_duration(3725), "1:02:05");
  EXPECT_EQ(format_duration(-1), "--:--");
}

TEST(Progress, CountsAndDrawsOnlyWhenEnabled) {
  Progress::set_enabled_globally(false);
  Progress quiet("quiet", 10);
  EXPECT_FALSE(quiet.enabled());
  quiet.advance(3);
  quiet.advance();
  EXPECT_EQ(quiet.count(), 4);

  Progress::set_enabled_globally(true);
  testing::internal::CaptureStderr();
  {
    Progress p("epoch 1", 4, "img");
    for (int i = 0; i < 4; ++i) p.advance();
    p.finish();
  }
  std::string out = testing::internal::GetCapturedStderr();
  Progress::set_enabled_globally(false);
  EXPECT_NE(out.find("epoch 1"), std::string::npos);
  EXPECT_NE(out.find("4/4"), std::string::npos);
  EXPECT_NE(out.find("img/s"), std::string::npos);
}

TEST(Progress, PlainLinesWhenNotOnATerminal) {
  // a log (nohup, `> log`) gets a line every interval with the counts, the rate and the postfix
  Progress::set_style_globally(Progress::Style::Lines);
  Progress::set_line_interval(0.05);
  testing::internal::CaptureStderr();
  {
    Progress p("tune epoch 1/2", 3, "ex");
    p.set_postfix("loss 0.1234");
    p.advance();
    std::this_thread::sleep_for(std::chrono::milliseconds(80));
    p.advance();  // a line: the interval has passed
    p.advance();
    std::this_thread::sleep_for(std::chrono::milliseconds(80));
    p.finish();  // the last figures of a loop that outlasted the interval
  }
  std::string out = testing::internal::GetCapturedStderr();
  Progress::set_line_interval(-1);
  Progress::set_enabled_globally(false);
  EXPECT_NE(out.find("tune epoch 1/2: 2/3"), std::string::npos) << out;
  EXPECT_NE(out.find("loss 0.1234"), std::string::npos) << out;
  EXPECT_NE(out.find("3/3"), std::string::npos) << out;
  EXPECT_EQ(out.find('\r'), std::string::npos) << "no carriage returns in a log";
  EXPECT_EQ(out.find("\x1b["), std::string::npos) << "no terminal escapes in a log";
}
