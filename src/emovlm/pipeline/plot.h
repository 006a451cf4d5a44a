// A small PNG bar chart for the ablation reports: grouped bars (one group per setting, one bar per
// series) over a 0-100% axis, with a title, axis labels, one tick label per group, a legend and
// optional horizontal reference lines, all lettered in a built-in 5x7 bitmap font.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "emovlm/image/image.h"

namespace emovlm {

struct BarSeries {
  std::vector<double> values;  // in [0, 1], one per group
  unsigned char rgb[3];
  std::string name;  // the legend's entry (last, so that {values, colour} still initialises)
};

// A horizontal line across the plot at `value` (in [0, 1]) with its own legend entry, e.g. the
// accuracy of a model the bars are compared with.
struct ReferenceLine {
  std::string name;
  double value;
  unsigned char rgb[3];
};

struct BarChart {
  std::string title;
  std::string x_label;  // what the groups are, e.g. "head hidden sizes"
  std::string y_label;  // with its unit, e.g. "test accuracy (%)"
  // one tick label per group (long ones wrap after a comma or at a space, then are cut)
  std::vector<std::string> groups;
  std::vector<BarSeries> series;
  std::vector<ReferenceLine> lines;
  int width = 800, height = 480;
};

// Draws the chart: the title centred at the top in the font at twice its size, the legend below
// it, the plot under them; throws Error naming the series or line when a value is not a number in
// [0, 1] or a series has not one value per group.
RgbImage render_bar_chart(const BarChart& chart);
// Renders and writes a PNG atomically.
void write_bar_chart(const std::string& path, const BarChart& chart);

// The built-in font: 5 columns x 7 rows per glyph, one byte per row (bit 4 is the leftmost
// column), printable ASCII (32-126); any other byte draws as '?'. Each glyph advances 6 pixels
// times the scale; g, p, q and y are drawn two rows lower (their tails hang below the line), so
// a line of text is 9 rows tall.
const uint8_t* font_glyph(char c);
int text_width(const std::string& s, int scale);
// Draws `s` with its top-left corner at (x, y); pixels outside the image are skipped.
void draw_text(RgbImage& img, int x, int y, const std::string& s, int scale,
               const unsigned char rgb[3]);

}  // namespace emovlm
