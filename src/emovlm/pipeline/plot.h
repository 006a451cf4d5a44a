// A small PNG chart for the ablation reports: grouped bars (one group per setting, one bar per
// series) over a 0-100% axis with gridlines and digit tick labels. No text beyond digits: the
// Markdown table beside it carries the names.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace emovlm {

struct BarSeries {
  std::vector<double> values;  // in [0, 1], one per group
  unsigned char rgb[3];
};

// Writes a PNG of width x height.
void write_bar_chart(const std::string& path, const std::vector<BarSeries>& series, size_t groups, int width = 640,
                     int height = 360);

}  // namespace emovlm
