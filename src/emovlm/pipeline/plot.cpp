// Bar charts as PNG, lettered with a built-in 5x7 bitmap font.
#include "emovlm/pipeline/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "emovlm/core/error.h"

namespace emovlm {

namespace {

// Printable ASCII from ' ' (32) to '~' (126): seven rows of five columns, bit 4 = left. The
// glyphs of g, p, q and y are their x-height body (rows 0-4) and tail (rows 5-6): they are drawn
// two rows lower than the others.
const uint8_t kFont[95][7] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},  // space
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04},  // !
    {0x0A, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00},  // "
    {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A},  // #
    {0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04},  // $
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03},  // %
    {0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D},  // &
    {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00},  // '
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02},  // (
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08},  // )
    {0x00, 0x15, 0x0E, 0x1F, 0x0E, 0x15, 0x00},  // *
    {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00},  // +
    {0x00, 0x00, 0x00, 0x00, 0x06, 0x04, 0x08},  // ,
    {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00},  // -
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C},  // .
    {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10},  // /
    {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E},  // 0
    {0x04, 0x0C, 0x14, 0x04, 0x04, 0x04, 0x1F},  // 1
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F},  // 2
    {0x1E, 0x01, 0x01, 0x0E, 0x01, 0x01, 0x1E},  // 3
    {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02},  // 4
    {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},  // 5
    {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E},  // 6
    {0x1F, 0x01, 0x02, 0x04, 0x04, 0x08, 0x08},  // 7
    {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E},  // 8
    {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C},  // 9
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00},  // :
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08},  // ;
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02},  // <
    {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00},  // =
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08},  // >
    {0x0E, 0x11, 0x01, 0x06, 0x04, 0x00, 0x04},  // ?
    {0x0E, 0x11, 0x17, 0x15, 0x17, 0x10, 0x0F},  // @
    {0x04, 0x0A, 0x11, 0x11, 0x1F, 0x11, 0x11},  // A
    {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E},  // B
    {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E},  // C
    {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C},  // D
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F},  // E
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10},  // F
    {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F},  // G
    {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11},  // H
    {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},  // I
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C},  // J
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11},  // K
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F},  // L
    {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11},  // M
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11},  // N
    {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E},  // O
    {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10},  // P
    {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D},  // Q
    {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11},  // R
    {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E},  // S
    {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},  // T
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E},  // U
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04},  // V
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A},  // W
    {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11},  // X
    {0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04},  // Y
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F},  // Z
    {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E},  // [
    {0x10, 0x10, 0x08, 0x04, 0x02, 0x01, 0x01},  // backslash
    {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E},  // ]
    {0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00},  // ^
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F},  // _
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00},  // `
    {0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F},  // a
    {0x10, 0x10, 0x1E, 0x11, 0x11, 0x11, 0x1E},  // b
    {0x00, 0x00, 0x0F, 0x10, 0x10, 0x10, 0x0F},  // c
    {0x01, 0x01, 0x0F, 0x11, 0x11, 0x11, 0x0F},  // d
    {0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E},  // e
    {0x06, 0x08, 0x1E, 0x08, 0x08, 0x08, 0x08},  // f
    {0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E},  // g
    {0x10, 0x10, 0x1E, 0x11, 0x11, 0x11, 0x11},  // h
    {0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E},  // i
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C},  // j
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12},  // k
    {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},  // l
    {0x00, 0x00, 0x1A, 0x15, 0x15, 0x15, 0x15},  // m
    {0x00, 0x00, 0x1E, 0x11, 0x11, 0x11, 0x11},  // n
    {0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E},  // o
    {0x1E, 0x11, 0x11, 0x11, 0x1E, 0x10, 0x10},  // p
    {0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x01},  // q
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10},  // r
    {0x00, 0x00, 0x0F, 0x10, 0x0E, 0x01, 0x1E},  // s
    {0x08, 0x08, 0x1E, 0x08, 0x08, 0x09, 0x06},  // t
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D},  // u
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04},  // v
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A},  // w
    {0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11},  // x
    {0x11, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E},  // y
    {0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F},  // z
    {0x03, 0x04, 0x04, 0x18, 0x04, 0x04, 0x03},  // {
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},  // |
    {0x18, 0x04, 0x04, 0x03, 0x04, 0x04, 0x18},  // }
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00},  // ~
};

constexpr int kAdvance = 6;  // 5 columns and one of space

int glyph_drop(char c) {
  return c == 'g' || c == 'p' || c == 'q' || c == 'y' ? 2 : 0;
}

using Rgb = unsigned char[3];
const Rgb kInk = {40, 40, 40}, kGrid = {228, 228, 228}, kAxis = {90, 90, 90};

void fill(RgbImage& img, int x0, int y0, int x1, int y1, const unsigned char c[3]) {
  for (int y = std::max(0, y0); y < std::min(img.height, y1); ++y)
    for (int x = std::max(0, x0); x < std::min(img.width, x1); ++x)
      for (int k = 0; k < 3; ++k) img.row(y)[3 * x + k] = c[k];
}

// Text read from bottom to top (the y axis's label): (x, y) is the bottom-left corner of the
// first glyph before the turn, i.e. the text runs upwards from y.
void draw_text_up(RgbImage& img, int x, int y, const std::string& s, int scale,
                  const unsigned char c[3]) {
  for (size_t i = 0; i < s.size(); ++i) {
    const uint8_t* g = font_glyph(s[i]);
    for (int r = 0; r < 7; ++r)
      for (int col = 0; col < 5; ++col)
        if (g[r] & (0x10 >> col)) {
          const int px = x + (r + glyph_drop(s[i])) * scale,
                    py = y - (static_cast<int>(i) * kAdvance + col + 1) * scale;
          fill(img, px, py, px + scale, py + scale, c);
        }
  }
}

// Cuts `s` to fit `max_width` pixels at scale 1, marking the cut with "..".
std::string cut_to_width(const std::string& s, int max_width) {
  if (text_width(s, 1) <= max_width) return s;
  std::string t = s;
  while (!t.empty() && text_width(t + "..", 1) > max_width) t.pop_back();
  return t + "..";
}

// A tick label in at most two lines of at most `max_width` pixels: whole when it fits, else
// broken after a comma or at a space, and what still does not fit is cut.
std::vector<std::string> tick_lines(const std::string& label, int max_width) {
  if (text_width(label, 1) <= max_width) return {label};
  size_t best = std::string::npos;  // the last break point whose first part fits
  for (size_t i = 0; i + 1 < label.size(); ++i)
    if ((label[i] == ',' || label[i] == ' ') && text_width(label.substr(0, i + 1), 1) <= max_width)
      best = i;
  if (best == std::string::npos) return {cut_to_width(label, max_width)};
  std::string first = label.substr(0, best + 1), rest = label.substr(best + 1);
  if (!first.empty() && first.back() == ' ') first.pop_back();
  return {first, cut_to_width(rest, max_width)};
}

std::string percent_text(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f", 100 * v);
  return b;
}

void check_fraction(double v, const std::string& what) {
  if (!(v >= 0 && v <= 1))
    throw Error(cat("bar chart: ", what, " is ", v, ", not a fraction in [0, 1]"));
}

}  // namespace

const uint8_t* font_glyph(char c) {
  const int i = static_cast<unsigned char>(c);
  return kFont[(i >= 32 && i <= 126 ? i : '?') - 32];
}

int text_width(const std::string& s, int scale) {
  return s.empty() ? 0 : (static_cast<int>(s.size()) * kAdvance - 1) * scale;
}

void draw_text(RgbImage& img, int x, int y, const std::string& s, int scale,
               const unsigned char rgb[3]) {
  for (size_t i = 0; i < s.size(); ++i) {
    const uint8_t* g = font_glyph(s[i]);
    const int gx = x + static_cast<int>(i) * kAdvance * scale, gy = y + glyph_drop(s[i]) * scale;
    for (int r = 0; r < 7; ++r)
      for (int col = 0; col < 5; ++col)
        if (g[r] & (0x10 >> col))
          fill(img, gx + col * scale, gy + r * scale, gx + (col + 1) * scale, gy + (r + 1) * scale,
               rgb);
  }
}

RgbImage render_bar_chart(const BarChart& ch) {
  check_range(ch.width, 240, 8000, "bar chart: width");
  check_range(ch.height, 200, 8000, "bar chart: height");
  if (ch.groups.empty() || ch.series.empty())
    throw Error("bar chart: no groups or no series to draw");
  for (const BarSeries& s : ch.series) {
    if (s.values.size() != ch.groups.size())
      throw Error(cat("bar chart: series '", s.name, "' has ", s.values.size(), " values for ",
                      ch.groups.size(), " groups"));
    for (size_t g = 0; g < s.values.size(); ++g)
      check_fraction(s.values[g], cat("series '", s.name, "' value ", g + 1));
  }
  for (const ReferenceLine& l : ch.lines)
    check_fraction(l.value, cat("reference line '", l.name, "'"));

  const int W = ch.width, H = ch.height;
  RgbImage img(W, H);
  std::fill(img.pixels.begin(), img.pixels.end(), 255);

  // the title: twice the font's size, centred, 10 pixels from the top
  int y = 10;
  if (!ch.title.empty()) {
    const std::string t = cut_to_width(ch.title, (W - 20) / 2);
    draw_text(img, (W - text_width(t, 2)) / 2, y, t, 2, kInk);
    y += 9 * 2 + 8;  // nine rows: the tails of g, p, q and y
  }

  // the legend: a 10x10 swatch per series, a dashed line sample per reference line, each followed
  // by its name; rows are centred and wrap at the image's width
  struct Entry {
    std::string name;
    const unsigned char* rgb;
    bool line;
  };
  std::vector<Entry> entries;
  for (const BarSeries& s : ch.series)
    entries.push_back({cut_to_width(s.name, W / 2), s.rgb, false});
  for (const ReferenceLine& l : ch.lines)
    entries.push_back({cut_to_width(l.name, W / 2), l.rgb, true});
  auto entry_width = [](const Entry& e) { return (e.line ? 18 : 10) + 5 + text_width(e.name, 1); };
  for (size_t first = 0; first < entries.size();) {
    int row = entry_width(entries[first]);
    size_t last = first + 1;
    while (last < entries.size() && row + 18 + entry_width(entries[last]) <= W - 24)
      row += 18 + entry_width(entries[last++]);
    int x = (W - row) / 2;
    for (size_t i = first; i < last; ++i) {
      const Entry& e = entries[i];
      if (e.line) {
        for (int dx = 0; dx < 18; dx += 6) fill(img, x + dx, y + 3, x + dx + 4, y + 5, e.rgb);
      } else {
        fill(img, x, y - 1, x + 10, y + 9, e.rgb);
      }
      x += (e.line ? 18 : 10) + 5;
      draw_text(img, x, y, e.name, 1, kInk);
      x += text_width(e.name, 1) + 18;
    }
    y += 18;
    first = last;
  }

  // the plot area: the y axis's label and tick labels on the left, the groups' tick labels (up to
  // two lines) and the x axis's label below
  const int left = 8 + 7 + 8 + text_width("100%", 1) + 6, right = W - 16, top = y + 8;
  const double gw = static_cast<double>(right - left) / ch.groups.size();
  std::vector<std::vector<std::string>> ticks;
  size_t tick_rows = 1;
  for (const std::string& g : ch.groups) {
    ticks.push_back(tick_lines(g, std::max(12, static_cast<int>(gw) - 6)));
    tick_rows = std::max(tick_rows, ticks.back().size());
  }
  const int bottom =
      H - (6 + 11 * static_cast<int>(tick_rows) + 8 + (ch.x_label.empty() ? 0 : 9) + 8);
  if (bottom - top < 60) throw Error(cat("bar chart: ", W, "x", H, " leaves no room for the plot"));
  auto y_of = [&](double v) { return static_cast<int>(std::lround(bottom - (bottom - top) * v)); };

  // gridlines every 10%, labelled every 20%
  for (int p = 0; p <= 100; p += 10) {
    const int gy = y_of(p / 100.0);
    fill(img, left, gy, right, gy + 1, p == 0 ? kAxis : kGrid);
    if (p % 20 == 0) {
      const std::string t = std::to_string(p) + "%";
      draw_text(img, left - 6 - text_width(t, 1), gy - 3, t, 1, kInk);
    }
  }
  fill(img, left, top, left + 1, bottom + 1, kAxis);
  if (!ch.y_label.empty()) {
    const std::string t = cut_to_width(ch.y_label, bottom - top);
    draw_text_up(img, 8, (top + bottom + text_width(t, 1)) / 2, t, 1, kInk);
  }

  // the bars, then the reference lines (dashed, over the bars), then each bar's value (in %) above
  // it when the bar is wide enough for the text, and the groups' tick labels
  const double bw = gw * 0.7 / ch.series.size();
  auto bar_x = [&](size_t g, size_t s) {
    return static_cast<int>(std::lround(left + g * gw + gw * 0.15 + s * bw));
  };
  for (size_t g = 0; g < ch.groups.size(); ++g)
    for (size_t s = 0; s < ch.series.size(); ++s)
      fill(img, bar_x(g, s), y_of(ch.series[s].values[g]), bar_x(g, s + 1) - 1, bottom,
           ch.series[s].rgb);
  for (const ReferenceLine& l : ch.lines) {
    const int ly = y_of(l.value);
    for (int x = left + 1; x < right; x += 8)
      fill(img, x, ly - 1, std::min(x + 5, right), ly + 1, l.rgb);
  }
  for (size_t g = 0; g < ch.groups.size(); ++g) {
    for (size_t s = 0; s < ch.series.size(); ++s) {
      const double v = ch.series[s].values[g];
      const int x0 = bar_x(g, s), x1 = bar_x(g, s + 1) - 1;
      const std::string t = percent_text(v);
      if (text_width(t, 1) <= x1 - x0)
        draw_text(img, (x0 + x1 - text_width(t, 1)) / 2, y_of(v) - 10, t, 1, kInk);
    }
    for (size_t l = 0; l < ticks[g].size(); ++l) {
      const std::string& t = ticks[g][l];
      draw_text(img, static_cast<int>(left + g * gw + (gw - text_width(t, 1)) / 2),
                bottom + 6 + 11 * static_cast<int>(l), t, 1, kInk);
    }
  }
  if (!ch.x_label.empty()) {
    const std::string t = cut_to_width(ch.x_label, right - left);
    draw_text(img, left + (right - left - text_width(t, 1)) / 2,
              bottom + 6 + 11 * static_cast<int>(tick_rows) + 8, t, 1, kInk);
  }
  return img;
}

void write_bar_chart(const std::string& path, const BarChart& chart) {
  write_image_file(path, render_bar_chart(chart));
}

}  // namespace emovlm
