// Progress bar: counting, formatting, and silence when not on a terminal.
#include <gtest/gtest.h>

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
