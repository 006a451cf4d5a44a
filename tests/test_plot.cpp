// The ablation's PNG bar chart and its bitmap font: the glyphs, the title, legend, axis and tick
// labels found as text in the picture, legend swatches in the series' colours, bar heights
// proportional to the values, reference lines at their values, long tick labels wrapped or cut,
// and bad values refused. One chart is left in the build tree (plot-example/ablation.png).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/pipeline/plot.h"
#include "test_util.h"

using namespace emovlm;

namespace {

const unsigned char kInk[3] = {40, 40, 40};  // the chart's text colour

bool same(const RgbImage& img, int x, int y, const unsigned char c[3]) {
  const uint8_t* p = img.row(y) + 3 * x;
  return p[0] == c[0] && p[1] == c[1] && p[2] == c[2];
}

// Where `text`, drawn in the built-in font at `scale` in `ink`, appears in `img` (the top-left
// corner of its box), or nothing: inside the box, exactly the text's pixels have the ink colour.
std::optional<std::pair<int, int>> find_text(const RgbImage& img, const std::string& text,
                                             int scale, const unsigned char ink[3] = kInk) {
  RgbImage t(text_width(text, scale), 9 * scale);
  std::fill(t.pixels.begin(), t.pixels.end(), 255);
  draw_text(t, 0, 0, text, scale, ink);
  std::vector<std::pair<int, int>>
      on;  // the text's pixels, checked first: most places fail at once
  std::vector<std::vector<bool>> mask(t.height, std::vector<bool>(t.width));
  for (int y = 0; y < t.height; ++y)
    for (int x = 0; x < t.width; ++x)
      if ((mask[y][x] = same(t, x, y, ink))) on.emplace_back(x, y);
  for (int y0 = 0; y0 + t.height <= img.height; ++y0)
    for (int x0 = 0; x0 + t.width <= img.width; ++x0) {
      bool match = true;
      for (size_t i = 0; i < on.size() && match; ++i)
        match = same(img, x0 + on[i].first, y0 + on[i].second, ink);
      for (int y = 0; y < t.height && match; ++y)
        for (int x = 0; x < t.width && match; ++x)
          match = same(img, x0 + x, y0 + y, ink) == mask[y][x];
      if (match) return std::make_pair(x0, y0);
    }
  return std::nullopt;
}

// The image turned a quarter clockwise: text that reads upwards reads left to right.
RgbImage turned_clockwise(const RgbImage& img) {
  RgbImage out(img.height, img.width);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      for (int k = 0; k < 3; ++k) out.row(x)[3 * (img.height - 1 - y) + k] = img.row(y)[3 * x + k];
  return out;
}

struct Box {
  int x0 = std::numeric_limits<int>::max(), y0 = std::numeric_limits<int>::max(), x1 = -1, y1 = -1;
  int64_t pixels = 0;
};
Box pixels_of(const RgbImage& img, const unsigned char c[3]) {
  Box b;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      if (same(img, x, y, c))
        b.x0 = std::min(b.x0, x), b.y0 = std::min(b.y0, y), b.x1 = std::max(b.x1, x),
        b.y1 = std::max(b.y1, y), ++b.pixels;
  return b;
}

BarChart ablation_like() {
  BarChart c;
  c.title = "Ablation: depth";
  c.x_label = "head hidden sizes";
  c.y_label = "test accuracy (%)";
  c.groups = {"1024", "1024,512", "1024,512,256"};
  c.series = {{{0.61, 0.63, 0.655}, {90, 140, 200}, "distillation head"},
              {{0.70, 0.71, 0.72}, {220, 120, 40}, "EmoVLM-KD"}};
  c.lines = {{"VLM 66.2%", 0.662, {40, 150, 80}}, {"teacher 70.0%", 0.70, {150, 80, 170}}};
  return c;
}

}  // namespace

TEST(PlotFont, GlyphsAreDistinctAndCoverPrintableAscii) {
  std::set<std::vector<uint8_t>> seen;
  for (int c = 32; c <= 126; ++c) {
    const uint8_t* g = font_glyph(static_cast<char>(c));
    std::vector<uint8_t> rows(g, g + 7);
    int ink = 0;
    for (uint8_t r : rows) {
      EXPECT_EQ(r & ~0x1F, 0) << "glyph '" << char(c) << "' is wider than five columns";
      ink += __builtin_popcount(r);
    }
    if (c == ' ')
      EXPECT_EQ(ink, 0);
    else
      EXPECT_GT(ink, 0) << "glyph '" << char(c) << "' is empty";
    EXPECT_TRUE(seen.insert(rows).second) << "glyph '" << char(c) << "' looks like another one";
  }
  EXPECT_EQ(font_glyph('\x01'), font_glyph('?'));
  EXPECT_EQ(font_glyph('\xe9'), font_glyph('?'));
  EXPECT_EQ(text_width("", 1), 0);
  EXPECT_EQ(text_width("ab", 2), 22);  // two 5-column glyphs and the column between them, doubled
}

TEST(PlotFont, DrawsScaledGlyphsAndHangsTails) {
  RgbImage img(40, 40);
  std::fill(img.pixels.begin(), img.pixels.end(), 255);
  draw_text(img, 5, 4, "R", 3, kInk);
  const uint8_t* g = font_glyph('R');
  for (int y = 0; y < 40; ++y)
    for (int x = 0; x < 40; ++x) {
      const int r = (y - 4) / 3, c = (x - 5) / 3;
      const bool inside = y >= 4 && x >= 5 && r < 7 && c < 5;
      EXPECT_EQ(same(img, x, y, kInk), inside && (g[r] & (0x10 >> c))) << x << "," << y;
    }
  // p's body sits where o's does; its tail goes two rows further down
  auto rows_of = [](char ch) {
    RgbImage t(10, 12);
    std::fill(t.pixels.begin(), t.pixels.end(), 255);
    draw_text(t, 0, 0, std::string(1, ch), 1, kInk);
    const Box b = pixels_of(t, kInk);
    return std::make_pair(b.y0, b.y1);
  };
  EXPECT_EQ(rows_of('p').first, rows_of('o').first);
  EXPECT_EQ(rows_of('p').second, rows_of('o').second + 2);
  EXPECT_EQ(rows_of('T').second,
            rows_of('o').second);  // capitals and x-height letters share the line
}

TEST(BarChart, TitleLegendAxesAndTicksAreLettered) {
  const BarChart c = ablation_like();
  const RgbImage img = render_bar_chart(c);
  ASSERT_EQ(img.width, c.width);
  ASSERT_EQ(img.height, c.height);
  // the title: twice the font's size, in the top band, centred
  const auto title = find_text(img, c.title, 2);
  ASSERT_TRUE(title) << "no title";
  EXPECT_LT(title->second, 30);
  EXPECT_NEAR(title->first + text_width(c.title, 2) / 2.0, c.width / 2.0, 2);
  for (const BarSeries& s : c.series) EXPECT_TRUE(find_text(img, s.name, 1)) << s.name;
  for (const ReferenceLine& l : c.lines) EXPECT_TRUE(find_text(img, l.name, 1)) << l.name;
  for (const std::string& g : c.groups) EXPECT_TRUE(find_text(img, g, 1)) << g;
  EXPECT_TRUE(find_text(img, c.x_label, 1));
  for (const char* tick : {"0%", "20%", "40%", "60%", "80%", "100%"})
    EXPECT_TRUE(find_text(img, tick, 1)) << tick;
  EXPECT_FALSE(find_text(img, "50%", 1));
  EXPECT_TRUE(find_text(turned_clockwise(img), c.y_label, 1)) << "no upright y-axis label";
  // the legend is above the plot, the x label below the tick labels
  EXPECT_LT(find_text(img, c.series[0].name, 1)->second, find_text(img, "100%", 1)->second);
  EXPECT_GT(find_text(img, c.x_label, 1)->second, find_text(img, c.groups[0], 1)->second);
}

TEST(BarChart, LegendSwatchesHaveTheSeriesColours) {
  // all values 0: no bars, so each series' colour is only its legend swatch, a filled square
  BarChart c = ablation_like();
  for (BarSeries& s : c.series) s.values.assign(c.groups.size(), 0.0);
  c.lines.clear();
  const RgbImage img = render_bar_chart(c);
  for (const BarSeries& s : c.series) {
    const Box b = pixels_of(img, s.rgb);
    ASSERT_GT(b.pixels, 0) << "no swatch for " << s.name;
    EXPECT_EQ(b.x1 - b.x0, b.y1 - b.y0) << s.name;
    EXPECT_GE(b.x1 - b.x0 + 1, 8) << s.name;
    EXPECT_EQ(b.pixels, int64_t(b.x1 - b.x0 + 1) * (b.y1 - b.y0 + 1))
        << s.name << ": not a filled square";
    // the name follows its swatch on the same line
    const auto name = find_text(img, s.name, 1);
    ASSERT_TRUE(name) << s.name;
    EXPECT_GT(name->first, b.x1);
    EXPECT_LT(name->first - b.x1, 12);
    EXPECT_NEAR(name->second + 3, (b.y0 + b.y1) / 2.0, 2);
  }
}

TEST(BarChart, BarHeightsAreProportionalAndReferenceLinesAtTheirValue) {
  BarChart c;
  c.title = "heights";
  c.y_label = "test accuracy (%)";
  c.x_label = "setting";
  c.groups = {"a", "b"};
  const unsigned char a[3] = {90, 140, 200}, b[3] = {220, 120, 40}, ref[3] = {40, 150, 80};
  c.series = {{{0.25, 0.75}, {a[0], a[1], a[2]}, "A"}, {{0.5, 1.0}, {b[0], b[1], b[2]}, "B"}};
  c.lines = {{"line at 75%", 0.75, {ref[0], ref[1], ref[2]}}};
  const RgbImage img = render_bar_chart(c);
  // each bar: its columns in the lowest row of its colour, its height up the middle column
  auto bars = [&](const unsigned char col[3]) {
    const int base = pixels_of(img, col).y1;
    std::vector<std::pair<int, int>> out;  // (middle column, height)
    for (int x = 0; x < img.width;) {
      if (!same(img, x, base, col)) {
        ++x;
        continue;
      }
      int e = x;
      while (e < img.width && same(img, e, base, col)) ++e;
      int h = 0;  // the tallest column: a dashed reference line may cover the top of some
      for (int cx = x; cx < e; ++cx) {
        int ch = 0;
        while (base - ch >= 0 && same(img, cx, base - ch, col)) ++ch;
        h = std::max(h, ch);
      }
      out.emplace_back((x + e) / 2, h);
      x = e;
    }
    return std::make_pair(base, out);
  };
  const auto [base_a, bars_a] = bars(a);
  const auto [base_b, bars_b] = bars(b);
  ASSERT_EQ(bars_a.size(), 2u);
  ASSERT_EQ(bars_b.size(), 2u);
  EXPECT_EQ(base_a, base_b);
  const double full = bars_b[1].second;  // the bar of 1.0: the whole axis
  EXPECT_GT(full, 200);
  EXPECT_NEAR(bars_a[0].second, 0.25 * full, 1.0);
  EXPECT_NEAR(bars_a[1].second, 0.75 * full, 1.0);
  EXPECT_NEAR(bars_b[0].second, 0.5 * full, 1.0);
  // the reference line: the rows where its colour runs across the plot, at the top of the 75% bar
  std::vector<int> rows;
  for (int y = 0; y < img.height; ++y) {
    int n = 0;
    for (int x = 0; x < img.width; ++x) n += same(img, x, y, ref);
    if (n > img.width / 4) rows.push_back(y);
  }
  ASSERT_FALSE(rows.empty()) << "no reference line";
  EXPECT_LE(rows.back() - rows.front(), 2);
  const double line_y = (rows.front() + rows.back()) / 2.0,
               top_of_75 = base_a - bars_a[1].second + 1;
  EXPECT_NEAR(line_y, top_of_75, 1.0);
  // and its legend entry
  EXPECT_TRUE(find_text(img, c.lines[0].name, 1));
}

TEST(BarChart, LongTickLabelsWrapAtCommasOrAreCut) {
  BarChart c;
  c.title = "narrow";
  c.width = 400;
  c.groups = {"1024", "1024,512,256,128,64", "abcdefghijklmnopqrstuvwxyz", "0.5", "concat"};
  c.series = {{{0.1, 0.2, 0.3, 0.4, 0.5}, {90, 140, 200}, "s"}};
  const RgbImage img = render_bar_chart(c);
  // 400 pixels for 5 groups leave 60 per label: 10 glyphs
  const auto first = find_text(img, "1024,512,", 1), second = find_text(img, "256,128,64", 1);
  ASSERT_TRUE(first);
  ASSERT_TRUE(second);
  EXPECT_GT(second->second, first->second);  // the rest on the next line
  const auto cut = find_text(img, "abcdefgh..", 1);
  ASSERT_TRUE(cut);
  EXPECT_FALSE(find_text(img, "abcdefghi", 1));
  // the labels keep to their own slots, left to right
  EXPECT_LT(first->first + text_width("1024,512,", 1), cut->first);
  EXPECT_LT(cut->first + text_width("abcdefgh..", 1), find_text(img, "0.5", 1)->first);
}

TEST(BarChart, RefusesBadValues) {
  auto refused = [](BarChart c, const std::string& needle) {
    try {
      render_bar_chart(c);
      ADD_FAILURE() << "no error (" << needle << ")";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  BarChart c = ablation_like();
  c.series[1].values[2] = 1.2;
  refused(c, "EmoVLM-KD");
  c = ablation_like();
  c.series[0].values[0] = std::nan("");
  refused(c, "distillation head");
  c = ablation_like();
  c.series[0].values.pop_back();
  refused(c, "distillation head' has 2 values for 3 groups");
  c = ablation_like();
  c.lines[0].value = -0.1;
  refused(c, "VLM 66.2%");
  c = ablation_like();
  c.groups.clear();
  for (BarSeries& s : c.series) s.values.clear();
  refused(c, "no groups");
}

TEST(BarChart, WritesThePng) {
  test::TempDir dir;
  const BarChart c = ablation_like();
  write_bar_chart(dir / "chart.png", c);
  const RgbImage back = decode_image_file(dir / "chart.png"), drawn = render_bar_chart(c);
  ASSERT_EQ(back.width, drawn.width);
  ASSERT_EQ(back.height, drawn.height);
  EXPECT_EQ(back.pixels, drawn.pixels);
  // one for a person to look at, in the build tree
  make_dirs(std::string(EMOVLM_TEST_OUT_DIR) + "/plot-example");
  write_bar_chart(std::string(EMOVLM_TEST_OUT_DIR) + "/plot-example/ablation.png", c);
}
