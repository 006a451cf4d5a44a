// The evaluation report's HTML page on the reports of tests/data/report: well-formed markup
// (every tag closed, every '<' and '&' of the data escaped), the figures of the report in it
// (class names, models, intervals, confusion counts, McNemar p), the parts an older report lacks
// left out, and a missing or malformed field refused with an error that names it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/pipeline/report_html.h"

using namespace emovlm;

namespace {

json fixture(const std::string& name) {
  return read_json_file(std::string(EMOVLM_TEST_DATA_DIR) + "/report/" + name);
}

// The escaping the page must apply, written out independently of html_escape.
std::string escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '"')
      out += "&quot;";
    else if (c == '\'')
      out += "&#39;";
    else
      out += c;
  }
  return out;
}

size_t occurrences(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
  return n;
}

std::string pct(double v, int decimals = 1) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", decimals, 100 * v);
  return b;
}

// Every '<' opens a tag, a comment or the doctype, and every '&' starts one of the five
// character references the page uses: no text from the report reached the page unescaped.
void expect_markup_escaped(const std::string& page) {
  for (size_t i = 0; i < page.size(); ++i) {
    if (page[i] == '<') {
      const char n = i + 1 < page.size() ? page[i + 1] : '\0';
      EXPECT_TRUE(std::isalpha(static_cast<unsigned char>(n)) || n == '/' || n == '!')
          << "a '<' that opens no tag at " << i << ": " << page.substr(i, 40);
    } else if (page[i] == '&') {
      bool known = false;
      for (const char* ref : {"&amp;", "&lt;", "&gt;", "&quot;", "&#39;"})
        known = known || page.compare(i, std::strlen(ref), ref) == 0;
      EXPECT_TRUE(known) << "a bare '&' at " << i << ": " << page.substr(i, 40);
    }
  }
}

// Tags opened and closed in a proper nesting order (for the elements the page uses with content).
void expect_balanced(const std::string& page) {
  std::vector<std::string> stack;
  const std::vector<std::string> paired = {
      "html", "head", "body", "main", "svg", "g",   "text",  "title", "table", "tr",
      "td",   "th",   "p",    "h1",   "h2",  "div", "style", "span",  "b",     "circle"};
  for (size_t i = page.find('<'); i != std::string::npos; i = page.find('<', i + 1)) {
    const bool closing = page[i + 1] == '/';
    size_t j = i + (closing ? 2 : 1), k = j;
    while (k < page.size() && std::isalnum(static_cast<unsigned char>(page[k]))) ++k;
    const std::string name = page.substr(j, k - j);
    if (std::find(paired.begin(), paired.end(), name) == paired.end()) continue;
    const size_t end = page.find('>', i);
    ASSERT_NE(end, std::string::npos) << "an unclosed tag at " << i;
    if (page[end - 1] == '/') continue;  // <circle .../>
    if (!closing) {
      stack.push_back(name);
    } else {
      ASSERT_FALSE(stack.empty()) << "</" << name << "> closes nothing at " << i;
      ASSERT_EQ(stack.back(), name) << "</" << name << "> closes <" << stack.back() << "> at " << i;
      stack.pop_back();
    }
  }
  EXPECT_TRUE(stack.empty()) << stack.size() << " elements left open, the last <"
                             << (stack.empty() ? "" : stack.back()) << ">";
}

}  // namespace

TEST(ReportHtml, EscapesAndQuotes) {
  EXPECT_EQ(html_escape("a<b & \"c\" 'd'>"), "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;");
  EXPECT_EQ(p_value_text(0.0123), "p = 0.012");
  EXPECT_EQ(p_value_text(0.5), "p = 0.500");
  EXPECT_EQ(p_value_text(0.001), "p = 0.001");
  EXPECT_EQ(p_value_text(0.00099), "p < 0.001");
  EXPECT_EQ(p_value_text(4.7e-7), "p < 0.001");
}

TEST(ReportHtml, FullReportHasEveryPart) {
  const json r = fixture("report.json");
  const std::string page = evaluation_html(r);
  expect_markup_escaped(page);
  expect_balanced(page);
  EXPECT_EQ(occurrences(page, "<svg "), occurrences(page, "</svg>"));
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  // no scripts, nothing fetched from elsewhere
  EXPECT_EQ(page.find("<script"), std::string::npos);
  EXPECT_EQ(occurrences(page, "http://"),
            occurrences(page, "xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_EQ(page.find("https://"), std::string::npos);
  EXPECT_EQ(page.find("url("), std::string::npos);

  EXPECT_NE(page.find(escaped(r["cache"].get<std::string>())), std::string::npos);
  EXPECT_NE(page.find(std::to_string(r["images"].get<int64_t>()) + " test images"),
            std::string::npos);
  for (const json& l : r["labels"]) {
    const std::string label = l.get<std::string>();
    EXPECT_NE(page.find(escaped(label)), std::string::npos) << label;
    if (label != escaped(label))
      EXPECT_EQ(page.find(label), std::string::npos) << "unescaped: " << label;
  }
  for (const char* name : {"VLM (Qwen2-VL)", "Teacher (vit)", "Distillation head", "EmoVLM-KD"})
    EXPECT_NE(page.find(name), std::string::npos) << name;

  // each model's accuracy and macro-F1 intervals, in the table
  for (const auto& [key, m] : r["models"].items()) {
    for (const char* metric : {"accuracy", "macro_f1"}) {
      const json& ci = m["interval"][metric];
      const std::string text =
          "[" + pct(ci[0].get<double>()) + ", " + pct(ci[1].get<double>()) + "]";
      EXPECT_NE(page.find(text), std::string::npos) << key << " " << metric << " " << text;
    }
  }
  // the gains: McNemar p and the counts of images only one of the two has right
  for (const char* input : {"vlm", "distill_head"}) {
    const json& g = r["gain"][input];
    EXPECT_NE(page.find("(McNemar " + p_value_text(g["mcnemar_p"].get<double>()) + ")"),
              std::string::npos)
        << input;
    EXPECT_NE(page.find("right on " + std::to_string(g["only_emovlm_kd_right"].get<int64_t>()) +
                        " images"),
              std::string::npos)
        << input;
  }
  EXPECT_NE(page.find("Oracle: " + pct(r["oracle"]["accuracy"].get<double>(), 2) + "%"),
            std::string::npos);
  // every cell of the three confusion matrices, with its count
  const std::vector<std::string> labels = r["labels"];
  for (const char* key : {"vlm", "distill_head", "emovlm_kd"}) {
    const json& conf = r["models"][key]["confusion"];
    for (size_t t = 0; t < labels.size(); ++t)
      for (size_t p = 0; p < labels.size(); ++p) {
        const std::string cell = "truth " + escaped(labels[t]) + ", predicted " +
                                 escaped(labels[p]) + ": " +
                                 std::to_string(conf[t][p].get<int64_t>()) + " images";
        EXPECT_NE(page.find(cell), std::string::npos) << key << ": " << cell;
      }
  }
  EXPECT_EQ(occurrences(page, "aria-label=\"confusion matrix of "), 3u);
  // per-class F1 with whiskers, complementarity, both training curves
  EXPECT_NE(page.find("Per-class F1 with 95% bootstrap intervals"), std::string::npos);
  EXPECT_NE(page.find("Complementarity"), std::string::npos);
  EXPECT_NE(page.find("Stage 2: the distillation head"), std::string::npos);
  EXPECT_NE(page.find("Stage 3: the gate"), std::string::npos);
  EXPECT_NE(page.find("validation accuracy (%)"), std::string::npos);
  EXPECT_NE(page.find("train loss (mean per image)"), std::string::npos);
}

TEST(ReportHtml, OlderReportLeavesOutWhatItLacks) {
  const json r = fixture("report_old.json");
  ASSERT_FALSE(r.contains("gain"));
  std::string page;
  ASSERT_NO_THROW(page = evaluation_html(r));
  expect_markup_escaped(page);
  expect_balanced(page);
  EXPECT_NE(page.find(escaped(r["cache"].get<std::string>())), std::string::npos);
  EXPECT_EQ(page.find(r["cache"].get<std::string>()), std::string::npos);
  for (const char* absent :
       {"McNemar", "bootstrap", "Oracle", "Training curves", "EmoVLM-KD beat", "Stage 2"})
    EXPECT_EQ(page.find(absent), std::string::npos) << absent;
  // no EmoVLM-KD in this report: two confusion matrices
  EXPECT_EQ(occurrences(page, "aria-label=\"confusion matrix of "), 2u);
  EXPECT_NE(page.find("Teacher (resnet50)"), std::string::npos);
  EXPECT_NE(page.find(std::to_string(r["test_images_in_training"].get<int64_t>()) +
                      " test images are also in"),
            std::string::npos);
}

TEST(ReportHtml, MissingOrMalformedFieldIsNamed) {
  const json full = fixture("report.json");
  // (JSON pointer removed, the field the error must name)
  const std::vector<std::pair<std::string, std::string>> removed = {
      {"/cache", "'cache'"},
      {"/labels", "'labels'"},
      {"/models", "'models'"},
      {"/models/vlm/confusion", "'models.vlm.confusion'"},
      {"/models/distill_head/accuracy", "'models.distill_head.accuracy'"},
      {"/models/emovlm_kd/per_class", "'models.emovlm_kd.per_class'"},
      {"/complementarity", "'complementarity'"},
      {"/complementarity/vlm_vs_head/only_head", "'complementarity.vlm_vs_head.only_head'"},
      {"/gain/vlm/mcnemar_p", "'gain.vlm.mcnemar_p'"},
      {"/curves/distill/0/epoch", "'curves.distill[0].epoch'"},
  };
  for (const auto& [pointer, name] : removed) {
    json r = full;
    const json::json_pointer ptr(pointer);
    r[ptr.parent_pointer()].erase(ptr.back());
    try {
      evaluation_html(r);
      ADD_FAILURE() << "no error without " << pointer;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << pointer << ": " << e.what();
    }
  }
  // present but wrong: (pointer, value, the field named)
  const std::vector<std::tuple<std::string, json, std::string>> wrong = {
      {"/models/vlm/accuracy", "high", "'models.vlm.accuracy'"},
      {"/models/vlm/accuracy", 1.5, "'models.vlm.accuracy'"},
      {"/models/teacher/confusion/1", json::array({1, 2}), "'models.teacher.confusion' row 1"},
      {"/models/vlm/interval/accuracy", json::array({0.7, 0.5}), "'models.vlm.interval.accuracy'"},
      {"/gain/distill_head/interval", json::array({0.1}), "'gain.distill_head.interval'"},
      {"/oracle/accuracy", nullptr, "'oracle.accuracy'"},
      {"/labels/2", 7, "'labels'"},
  };
  for (const auto& [pointer, value, name] : wrong) {
    json r = full;
    r[json::json_pointer(pointer)] = value;
    try {
      evaluation_html(r);
      ADD_FAILURE() << "no error with " << pointer << " = " << value.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << pointer << ": " << e.what();
    }
  }
}
