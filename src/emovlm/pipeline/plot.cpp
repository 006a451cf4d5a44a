// Minimal bar charts as PNG.
#include "emovlm/pipeline/plot.h"

#include <algorithm>
#include <cmath>

#include "emovlm/core/error.h"
#include "emovlm/image/image.h"

namespace emovlm {

namespace {

// 3x5 digits and '%', one row per 3-bit mask, top to bottom.
const unsigned char kGlyphs[11][5] = {{7, 5, 5, 5, 7}, {2, 6, 2, 2, 7}, {7, 1, 7, 4, 7}, {7, 1, 7, 1, 7}, {5, 5, 7, 1, 1},
                                      {7, 4, 7, 1, 7}, {7, 4, 7, 5, 7}, {7, 1, 1, 1, 1}, {7, 5, 7, 5, 7}, {7, 5, 7, 1, 7},
                                      {5, 1, 2, 4, 5}};

void fill(RgbImage& img, int x0, int y0, int x1, int y1, const unsigned char c[3]) {
  for (int y = std::max(0, y0); y < std::min(img.height, y1); ++y)
    for (int x = std::max(0, x0); x < std::min(img.width, x1); ++x)
      for (int k = 0; k < 3; ++k) img.row(y)[3 * x + k] = c[k];
}

void text(RgbImage& img, int x, int y, const std::string& s, int scale, const unsigned char c[3]) {
  for (char ch : s) {
    int g = ch == '%' ? 10 : (ch >= '0' && ch <= '9' ? ch - '0' : -1);
    if (g >= 0)
      for (int r = 0; r < 5; ++r)
        for (int b = 0; b < 3; ++b)
          if (kGlyphs[g][r] & (4 >> b)) fill(img, x + b * scale, y + r * scale, x + (b + 1) * scale, y + (r + 1) * scale, c);
    x += 4 * scale;
  }
}

}  // namespace

void write_bar_chart(const std::string& path, const std::vector<BarSeries>& series, size_t groups, int W, int H) {
  if (series.empty() || groups == 0) throw Error("bar chart: nothing to draw");
  RgbImage img(W, H);
  std::fill(img.pixels.begin(), img.pixels.end(), 255);
  const unsigned char grid[3] = {225, 225, 225}, axis[3] = {60, 60, 60};
  const int left = 48, right = W - 12, top = 12, bottom = H - 28;
  for (int p = 0; p <= 100; p += 10) {
    const int y = bottom - (bottom - top) * p / 100;
    fill(img, left, y, right, y + 1, p % 50 == 0 ? axis : grid);
    text(img, 4, y - 5, std::to_string(p) + "%", 2, axis);
  }
  fill(img, left, top, left + 1, bottom, axis);
  const double gw = static_cast<double>(right - left) / groups;
  const double bw = gw * 0.8 / series.size();
  for (size_t g = 0; g < groups; ++g) {
    for (size_t s = 0; s < series.size(); ++s) {
      const double v = std::clamp(g < series[s].values.size() ? series[s].values[g] : 0.0, 0.0, 1.0);
      const int x0 = static_cast<int>(left + g * gw + gw * 0.1 + s * bw);
      fill(img, x0, static_cast<int>(bottom - (bottom - top) * v), static_cast<int>(x0 + bw - 1), bottom, series[s].rgb);
    }
    text(img, static_cast<int>(left + g * gw + gw / 2 - 6), bottom + 8, std::to_string(g + 1), 2, axis);
  }
  write_image_file(path, img);
}

}  // namespace emovlm
