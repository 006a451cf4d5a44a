// The evaluation report as an HTML page with inline SVG charts.
#include "emovlm/pipeline/report_html.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>

#include "emovlm/core/error.h"

namespace emovlm {

using json = nlohmann::json;

namespace {

// ---- reading the report: every field checked, errors name it ----------------------------------

const char* const kWhat = "evaluation report";

std::string join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

const json& field(const json& j, const std::string& key, const std::string& path) {
  if (!j.is_object())
    throw Error(cat(kWhat, ": '", path.empty() ? "(top level)" : path, "' is not an object"));
  auto it = j.find(key);
  if (it == j.end()) throw Error(cat(kWhat, ": missing field '", join(path, key), "'"));
  return *it;
}

// The field, or nullptr when it is absent or null (the fields older reports lack).
const json* optional_field(const json& j, const std::string& key) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

double number_value(const json& v, const std::string& name, double lo, double hi) {
  if (!v.is_number())
    throw Error(cat(kWhat, ": field '", name, "' is not a number (", v.type_name(), ")"));
  const double d = v.get<double>();
  if (!(d >= lo && d <= hi))
    throw Error(cat(kWhat, ": field '", name, "' is ", d, ", outside [", lo, ", ", hi, "]"));
  return d;
}
double number(const json& j, const std::string& key, const std::string& path, double lo = 0,
              double hi = 1) {
  return number_value(field(j, key, path), join(path, key), lo, hi);
}
int64_t count(const json& j, const std::string& key, const std::string& path) {
  const json& v = field(j, key, path);
  if (!v.is_number_integer() || v.get<int64_t>() < 0)
    throw Error(cat(kWhat, ": field '", join(path, key), "' is not a count (", v.dump(), ")"));
  return v.get<int64_t>();
}
std::string text(const json& j, const std::string& key, const std::string& path) {
  const json& v = field(j, key, path);
  if (!v.is_string())
    throw Error(
        cat(kWhat, ": field '", join(path, key), "' is not a string (", v.type_name(), ")"));
  return v.get<std::string>();
}

struct Interval {
  double lo = 0, hi = 0;
};
Interval interval_value(const json& v, const std::string& name, double lo, double hi) {
  if (!v.is_array() || v.size() != 2)
    throw Error(cat(kWhat, ": field '", name, "' is not a [low, high] pair"));
  Interval r{number_value(v[0], name + "[0]", lo, hi), number_value(v[1], name + "[1]", lo, hi)};
  if (r.lo > r.hi)
    throw Error(cat(kWhat, ": field '", name, "' has its low end above its high end"));
  return r;
}

struct Model {
  std::string key, name, short_name, colour;
  int64_t n = 0, unparsable = 0;
  std::optional<int64_t> parameters;
  std::string gate;  // EmoVLM-KD's gate kind, when the report names it
  double accuracy = 0, macro_f1 = 0, weighted_f1 = 0;
  std::optional<Interval> accuracy_ci, macro_f1_ci;
  std::vector<std::vector<int64_t>> confusion;  // [truth][prediction]
  std::vector<double> f1;
  std::vector<int64_t> support;
  std::vector<std::optional<Interval>> f1_ci;
};

struct Gain {
  std::string input_name;  // "the VLM"
  double difference = 0;
  Interval ci;
  int64_t only_kd = 0, only_input = 0;
  double p = 1;
};

struct Pair {
  std::string first, second;  // short names
  int64_t both_right = 0, only_first = 0, only_second = 0, both_wrong = 0;
};

struct CurvePoint {
  double epoch = 0;
  std::optional<double> loss, val;
};

struct Report {
  std::string cache, vlm_mode;
  int64_t images = 0;
  std::vector<std::string> labels;
  std::vector<Model> models;
  std::optional<int64_t> shared_images;  // test images also in the head's training cache
  int64_t resamples = 0;
  double level = 0.95;
  bool bootstrap = false;
  std::optional<double> oracle;
  std::optional<Interval> oracle_ci;
  std::vector<Gain> gains;
  std::vector<Pair> pairs;
  std::vector<CurvePoint> distill_curve, gate_curve;
  std::optional<bool> gate_beats_inputs;
  const Model* find(const std::string& key) const {
    for (const Model& m : models)
      if (m.key == key) return &m;
    return nullptr;
  }
};

// Display names and colours of the models evaluate reports, in the page's order.
struct Known {
  const char *key, *name, *short_name, *colour;
};
const Known kKnown[] = {{"vlm", "VLM (Qwen2-VL)", "VLM", "#4e79a7"},
                        {"teacher", "Teacher", "teacher", "#b07aa1"},
                        {"distill_head", "Distillation head", "head", "#f28e2b"},
                        {"emovlm_kd", "EmoVLM-KD", "EmoVLM-KD", "#e15759"}};
const char* const kOtherColours[] = {"#76b7b2", "#9c755f", "#edc948", "#ff9da7"};

std::string short_name_of(const std::string& key) {
  if (key == "head") return "head";
  for (const Known& k : kKnown)
    if (key == k.key) return k.short_name;
  return key;
}

Model read_model(const json& j, const std::string& key, const std::string& path,
                 const std::vector<std::string>& labels) {
  Model m;
  m.key = key;
  m.n = count(j, "n", path);
  m.unparsable = count(j, "unparsable", path);
  m.accuracy = number(j, "accuracy", path);
  m.macro_f1 = number(j, "macro_f1", path);
  m.weighted_f1 = number(j, "weighted_f1", path);
  if (const json* p = optional_field(j, "parameters")) {
    if (!p->is_number_integer())
      throw Error(cat(kWhat, ": field '", path, ".parameters' is not an integer or null"));
    m.parameters = p->get<int64_t>();
  }
  if (const json* g = optional_field(j, "gate"); g && g->is_string())
    m.gate = g->get<std::string>();
  const size_t C = labels.size();
  const json& conf = field(j, "confusion", path);
  if (!conf.is_array() || conf.size() != C)
    throw Error(cat(kWhat, ": field '", path, ".confusion' is not a ", C, "x", C,
                    " matrix (one row per label)"));
  for (size_t t = 0; t < C; ++t) {
    if (!conf[t].is_array() || conf[t].size() != C)
      throw Error(
          cat(kWhat, ": field '", path, ".confusion' row ", t, " does not have ", C, " counts"));
    std::vector<int64_t> row;
    for (size_t p = 0; p < C; ++p) {
      if (!conf[t][p].is_number_integer() || conf[t][p].get<int64_t>() < 0)
        throw Error(cat(kWhat, ": field '", path, ".confusion[", t, "][", p, "]' is not a count"));
      row.push_back(conf[t][p].get<int64_t>());
    }
    m.confusion.push_back(row);
  }
  const json& per_class = field(j, "per_class", path);
  const json* ci = optional_field(j, "interval");
  const std::string ci_path = path + ".interval";
  if (ci) {
    if (const json* a = optional_field(*ci, "accuracy"))
      m.accuracy_ci = interval_value(*a, ci_path + ".accuracy", 0, 1);
    if (const json* a = optional_field(*ci, "macro_f1"))
      m.macro_f1_ci = interval_value(*a, ci_path + ".macro_f1", 0, 1);
  }
  const json* f1_ci = ci ? optional_field(*ci, "f1") : nullptr;
  for (const std::string& label : labels) {
    const json& c = field(per_class, label, path + ".per_class");
    const std::string cp = path + ".per_class." + label;
    m.f1.push_back(number(c, "f1", cp));
    m.support.push_back(count(c, "support", cp));
    const json* l = f1_ci ? optional_field(*f1_ci, label) : nullptr;
    m.f1_ci.push_back(
        l ? std::optional<Interval>(interval_value(*l, ci_path + ".f1." + label, 0, 1))
          : std::nullopt);
  }
  return m;
}

std::vector<CurvePoint> read_curve(const json& v, const std::string& path) {
  if (!v.is_array()) throw Error(cat(kWhat, ": field '", path, "' is not a list"));
  std::vector<CurvePoint> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string p = cat(path, "[", i, "]");
    CurvePoint c;
    c.epoch = number(v[i], "epoch", p, 0, 1e9);
    if (const json* l = optional_field(v[i], "train_loss"))
      c.loss = number_value(*l, p + ".train_loss", 0, 1e9);
    if (const json* a = optional_field(v[i], "val_accuracy"))
      c.val = number_value(*a, p + ".val_accuracy", 0, 1);
    out.push_back(c);
  }
  return out;
}

Report read_report(const json& r) {
  if (!r.is_object()) throw Error(cat(kWhat, ": not a JSON object"));
  Report rep;
  rep.cache = text(r, "cache", "");
  rep.images = count(r, "images", "");
  const json& labels = field(r, "labels", "");
  if (!labels.is_array() || labels.empty())
    throw Error(cat(kWhat, ": field 'labels' is not a list of class names"));
  for (const json& l : labels) {
    if (!l.is_string())
      throw Error(cat(kWhat, ": field 'labels' holds a ", l.type_name(), ", not a class name"));
    rep.labels.push_back(l.get<std::string>());
  }
  if (const json* m = optional_field(r, "vlm_mode"); m && m->is_string())
    rep.vlm_mode = m->get<std::string>();
  const json& models = field(r, "models", "");
  if (!models.is_object() || models.empty())
    throw Error(cat(kWhat, ": field 'models' is not an object of models"));
  size_t other = 0;
  auto add = [&](const std::string& key, const json& j) {
    Model m = read_model(j, key, "models." + key, rep.labels);
    m.name = m.short_name = key;
    m.colour = kOtherColours[other++ % 4];
    for (const Known& k : kKnown)
      if (key == k.key) m.name = k.name, m.short_name = k.short_name, m.colour = k.colour;
    if (key == "teacher") {  // the architecture's display name (evaluate writes it), else its key
      const json* a = optional_field(j, "display_name");
      if (!a || !a->is_string()) a = optional_field(j, "arch");
      if (a && a->is_string()) m.name += " (" + a->get<std::string>() + ")";
    }
    rep.models.push_back(m);
  };
  for (const Known& k : kKnown)
    if (models.contains(k.key)) add(k.key, models[k.key]);
  for (auto it = models.begin(); it != models.end(); ++it)
    if (!rep.find(it.key())) add(it.key(), it.value());
  if (const json* s = optional_field(r, "test_images_in_training"); s && s->is_number_integer())
    rep.shared_images = s->get<int64_t>();

  if (const json* b = optional_field(r, "bootstrap")) {
    rep.bootstrap = true;
    rep.resamples = count(*b, "resamples", "bootstrap");
    rep.level = number(*b, "level", "bootstrap");
  }
  if (const json* o = optional_field(r, "oracle")) {
    rep.oracle = number(*o, "accuracy", "oracle");
    if (const json* ci = optional_field(*o, "interval"))
      rep.oracle_ci = interval_value(*ci, "oracle.interval", 0, 1);
  }
  if (const json* g = optional_field(r, "gain")) {
    const std::pair<const char*, const char*> inputs[] = {
        {"vlm", "the VLM"}, {"distill_head", "the distillation head"}};
    for (const auto& [key, name] : inputs) {
      const json* e = optional_field(*g, key);
      if (!e) continue;
      const std::string p = std::string("gain.") + key;
      Gain gain;
      gain.input_name = name;
      gain.difference = number(*e, "difference", p, -1, 1);
      gain.ci = interval_value(field(*e, "interval", p), p + ".interval", -1, 1);
      gain.only_kd = count(*e, "only_emovlm_kd_right", p);
      gain.only_input = count(*e, std::string("only_") + key + "_right", p);
      gain.p = number(*e, "mcnemar_p", p);
      rep.gains.push_back(gain);
    }
  }
  const json& comp = field(r, "complementarity", "");
  if (!comp.is_object())
    throw Error(cat(kWhat, ": field 'complementarity' is not an object of model pairs"));
  std::vector<std::string> pair_keys;  // evaluate's pairs in the paper's order, then any others
  for (const char* key : {"vlm_vs_teacher", "vlm_vs_head"})
    if (comp.contains(key)) pair_keys.push_back(key);
  for (auto it = comp.begin(); it != comp.end(); ++it)
    if (std::find(pair_keys.begin(), pair_keys.end(), it.key()) == pair_keys.end())
      pair_keys.push_back(it.key());
  for (const std::string& key : pair_keys) {
    const json& pj = comp[key];
    const size_t vs = key.find("_vs_");
    if (vs == std::string::npos) continue;
    const std::string a = key.substr(0, vs), b = key.substr(vs + 4), p = "complementarity." + key;
    Pair pair{short_name_of(a), short_name_of(b)};
    pair.both_right = count(pj, "both_right", p);
    pair.only_first = count(pj, "only_" + a, p);
    pair.only_second = count(pj, "only_" + b, p);
    pair.both_wrong = count(pj, "both_wrong", p);
    rep.pairs.push_back(pair);
  }
  if (const json* c = optional_field(r, "curves")) {
    if (const json* d = optional_field(*c, "distill"))
      rep.distill_curve = read_curve(*d, "curves.distill");
    if (const json* g = optional_field(*c, "gate")) rep.gate_curve = read_curve(*g, "curves.gate");
  }
  if (const json* g = optional_field(r, "gate_beats_inputs")) {
    if (!g->is_boolean())
      throw Error(cat(kWhat, ": field 'gate_beats_inputs' is not true or false"));
    rep.gate_beats_inputs = g->get<bool>();
  }
  return rep;
}

// ---- formatting --------------------------------------------------------------------------------

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
std::string pct(double v, int decimals = 1) {
  return fmt(decimals == 2 ? "%.2f" : decimals == 0 ? "%.0f" : "%.1f", 100 * v);
}
// A signed difference in percentage points with a true minus sign.
std::string signed_points(double v) {
  const std::string s = fmt("%+.2f", 100 * v);
  return s[0] == '-' ? "\u2212" + s.substr(1) : s;
}
std::string interval_text(const Interval& i) {
  return "[" + pct(i.lo) + ", " + pct(i.hi) + "]";
}
std::string level_text(double level) {
  return fmt("%.0f", 100 * level) + "%";
}
// A coordinate: one decimal, no trailing ".0".
std::string num(double v) {
  std::string s = fmt("%.1f", v);
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  return s == "-0" ? "0" : s;
}
std::string human(int64_t n) {
  if (n >= 1000000000) return fmt("%.2fB", n / 1e9);
  if (n >= 1000000) return fmt("%.2fM", n / 1e6);
  if (n >= 10000) return fmt("%.1fk", n / 1e3);
  return std::to_string(n);
}

// At most `max_chars` characters (UTF-8 code points) of `s`, the cut marked with an ellipsis.
std::string shorten(const std::string& s, size_t max_chars) {
  size_t chars = 0, cut = std::string::npos;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (chars == max_chars - 1) cut = i;
    if (++chars > max_chars) return s.substr(0, cut) + "\u2026";
  }
  return s;
}
size_t char_count(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}
// A rough width of 12-pixel sans-serif text, for layout.
double text_px(const std::string& s, double size = 12) {
  return char_count(s) * size * 0.56;
}

// ---- SVG pieces --------------------------------------------------------------------------------

std::string svg_open(double w, double h, const std::string& label) {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(w) + "\" height=\"" + num(h) +
         "\" viewBox=\"0 0 " + num(w) + " " + num(h) + "\" role=\"img\" aria-label=\"" +
         html_escape(label) + "\">\n";
}
std::string rect(double x, double y, double w, double h, const std::string& fill,
                 const std::string& extra = "") {
  return "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(std::max(0.0, w)) +
         "\" height=\"" + num(std::max(0.0, h)) + "\" fill=\"" + fill + "\"" + extra + "/>";
}
std::string line(double x1, double y1, double x2, double y2, const std::string& stroke,
                 double width = 1, const std::string& extra = "") {
  return "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" +
         num(y2) + "\" stroke=\"" + stroke + "\" stroke-width=\"" + num(width) + "\"" + extra +
         "/>";
}
// Text (escaped here); `attrs` may set text-anchor, font-size, transform, fill.
std::string svg_text(double x, double y, const std::string& s, const std::string& attrs = "") {
  return "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\"" + (attrs.empty() ? "" : " " + attrs) +
         ">" + html_escape(s) + "</text>";
}
std::string tooltip(const std::string& s) {
  return "<title>" + html_escape(s) + "</title>";
}
std::string chart_title(double x, const std::string& s, const std::string& anchor = "start") {
  return svg_text(x, 20, s,
                  "font-size=\"15\" font-weight=\"bold\" text-anchor=\"" + anchor + "\"") +
         "\n";
}
// Text turned to read upwards, centred on (x, y).
std::string vertical_text(double x, double y, const std::string& s) {
  return svg_text(x, y, s,
                  "text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 " + num(x) + " " +
                      num(y) + ")\"");
}

// Legend entries: a filled box, a line (solid or dashed) or an interval whisker, then a name.
struct LegendEntry {
  enum Kind { Box, Line, Dashed, Whisker } kind;
  std::string colour, name;
};
double legend_width(const std::vector<LegendEntry>& entries) {
  double w = 0;
  for (const LegendEntry& e : entries) w += 24 + text_px(e.name) + 18;
  return w;
}
std::string legend(double x, double y, const std::vector<LegendEntry>& entries) {
  std::string s = "<g class=\"legend\">";
  for (const LegendEntry& e : entries) {
    switch (e.kind) {
      case LegendEntry::Box:
        s += rect(x, y - 9, 14, 12, e.colour, " class=\"swatch\"");
        break;
      case LegendEntry::Line:
        s += line(x, y - 3, x + 18, y - 3, e.colour, 2.5);
        break;
      case LegendEntry::Dashed:
        s += line(x, y - 3, x + 18, y - 3, e.colour, 2.5, " stroke-dasharray=\"5 3\"");
        break;
      case LegendEntry::Whisker:
        s += line(x + 7, y - 10, x + 7, y + 4, e.colour, 1.5) +
             line(x + 3, y - 10, x + 11, y - 10, e.colour, 1.5) +
             line(x + 3, y + 4, x + 11, y + 4, e.colour, 1.5);
        break;
    }
    s += svg_text(x + 24, y + 1, e.name, "font-size=\"12\"");
    x += 24 + text_px(e.name) + 18;
  }
  return s + "</g>\n";
}

// 1, 2 or 5 times a power of ten: a tick step giving at most about `ticks` ticks over `range`.
double nice_step(double range, int ticks) {
  if (!(range > 0)) return 1;
  const double raw = range / ticks, mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double f : {1.0, 2.0, 5.0, 10.0})
    if (raw <= f * mag) return f * mag;
  return 10 * mag;
}
std::string tick_text(double v, double step) {
  return step >= 1 ? fmt("%.0f", v) : step >= 0.1 ? fmt("%.1f", v) : fmt("%.2f", v);
}

// Horizontal gridlines and labelled ticks of a value axis from lo to hi on the left (or right)
// edge of the plot area [left, right] x [top, bottom].
std::string value_axis(double lo, double hi, double step, double left, double right, double top,
                       double bottom, bool on_right, bool grid) {
  std::string s;
  for (double v = lo; v <= hi + step * 1e-6; v += step) {
    const double y = bottom - (bottom - top) * (v - lo) / (hi - lo);
    if (grid) s += line(left, y, right, y, "#e6e6e6");
    const double x = on_right ? right : left;
    s += line(x, y, on_right ? x + 4 : x - 4, y, "#555");
    s += svg_text(
        on_right ? x + 7 : x - 7, y + 4, tick_text(v, step),
        std::string("font-size=\"11\" text-anchor=\"") + (on_right ? "start" : "end") + "\"");
  }
  return s + line(on_right ? right : left, top, on_right ? right : left, bottom, "#555") + "\n";
}

// Category labels under a plot: horizontal when they fit their slot, else turned 35 degrees.
// Returns the SVG and, through `height`, the room they take below `y`.
std::string category_labels(const std::vector<std::string>& full,
                            const std::vector<std::string>& second_line, double left, double slot,
                            double y, size_t max_chars, double* height) {
  std::vector<std::string> shown;
  bool fit = true;
  double widest = 0;
  for (const std::string& l : full) {
    shown.push_back(shorten(l, max_chars));
    widest = std::max(widest, text_px(shown.back()));
    fit = fit && text_px(shown.back()) <= slot - 4;
  }
  std::string s;
  for (size_t i = 0; i < full.size(); ++i) {
    const double cx = left + slot * (i + 0.5);
    std::string label = "<g>" + tooltip(full[i]);
    if (fit) {
      label += svg_text(cx, y + 14, shown[i], "font-size=\"12\" text-anchor=\"middle\"");
      if (!second_line.empty())
        label += svg_text(cx, y + 28, second_line[i],
                          "font-size=\"11\" text-anchor=\"middle\" fill=\"#666\"");
    } else {
      const std::string t = second_line.empty() ? shown[i] : shown[i] + " (" + second_line[i] + ")";
      label += svg_text(cx + 4, y + 12, t,
                        "font-size=\"12\" text-anchor=\"end\" transform=\"rotate(-35 " +
                            num(cx + 4) + " " + num(y + 12) + ")\"");
    }
    s += label + "</g>\n";
  }
  if (fit) {
    *height = second_line.empty() ? 20 : 34;
  } else {
    double w = widest + (second_line.empty() ? 0 : 60);
    *height = 16 + w * std::sin(35 * 3.14159265358979 / 180) + 4;
  }
  return s;
}

// ---- the charts ---------------------------------------------------------------------------------

// The page's content width (1200 pixels less margins and a scroll bar); three confusion
// matrices or two training curves share it.
constexpr double kWidth = 1104;

// Colour of a row share in [0, 1]: white through mid blue to dark blue.
std::string heat(double t) {
  const double stops[3][3] = {{247, 251, 255}, {107, 174, 214}, {8, 48, 107}};
  t = std::clamp(t, 0.0, 1.0);
  const int seg = t < 0.5 ? 0 : 1;
  const double u = (t - 0.5 * seg) / 0.5;
  char b[8];
  int c[3];
  for (int k = 0; k < 3; ++k)
    c[k] = static_cast<int>(std::lround(stops[seg][k] + (stops[seg + 1][k] - stops[seg][k]) * u));
  std::snprintf(b, sizeof b, "#%02x%02x%02x", c[0], c[1], c[2]);
  return b;
}

std::string confusion_svg(const Model& m, const std::vector<std::string>& labels) {
  const size_t C = labels.size();
  const double W = 360;
  size_t longest = 0;
  for (const std::string& l : labels) longest = std::max(longest, char_count(shorten(l, 14)));
  const double label_w = longest * 12 * 0.56 + 6, left = 24 + label_w, top = 50;
  const double G = std::min(W - left - 14, 300.0), cell = G / C;
  std::string body;
  double below = 0;
  body += category_labels(labels, {}, left, cell, top + G, 14, &below);
  const double axis_y = top + G + below + 14;
  body += svg_text(left + G / 2, axis_y, "prediction (class)",
                   "font-size=\"12\" text-anchor=\"middle\" font-weight=\"bold\"");
  body += vertical_text(12, top + G / 2, "truth (class)") + "\n";
  const double count_size = std::min(12.0, cell * 0.36);
  for (size_t t = 0; t < C; ++t) {
    const double ty = top + cell * (t + 0.5);
    body +=
        "<g>" + tooltip(labels[t]) +
        svg_text(left - 6, ty + 4, shorten(labels[t], 14), "font-size=\"12\" text-anchor=\"end\"") +
        "</g>\n";
    const int64_t row_images = m.support[t];
    for (size_t p = 0; p < C; ++p) {
      const int64_t k = m.confusion[t][p];
      const double share = row_images > 0 ? static_cast<double>(k) / row_images : 0.0;
      const double x = left + cell * p, y = top + cell * t;
      body += "<g>" +
              tooltip(cat("truth ", labels[t], ", predicted ", labels[p], ": ", k, " images (",
                          pct(share), "% of the class)")) +
              rect(x, y, cell, cell, heat(share), " stroke=\"#fff\" stroke-width=\"1\"");
      if (count_size >= 7)
        body += svg_text(x + cell / 2, y + cell / 2 + count_size * 0.35, std::to_string(k),
                         "font-size=\"" + num(count_size) + "\" text-anchor=\"middle\" fill=\"" +
                             (share > 0.5 ? "#fff"
                              : k == 0    ? "#999"
                                          : "#222") +
                             "\"");
      body += "</g>\n";
    }
  }
  // the colour scale: ten steps of the row share
  const double ly = axis_y + 14;
  for (int i = 0; i < 10; ++i)
    body += rect(left + i * 14, ly, 14, 10, heat((i + 0.5) / 10),
                 " stroke=\"#ccc\" stroke-width=\"0.5\"");
  body +=
      svg_text(left, ly + 24, "0%", "font-size=\"11\"") +
      svg_text(left + 140, ly + 24, "100%", "font-size=\"11\" text-anchor=\"end\"") +
      svg_text(8, ly + 42, "colour: share of the true class's images (row %)", "font-size=\"11\"") +
      svg_text(8, ly + 56, "numbers: images", "font-size=\"11\"") + "\n";
  double H = ly + 64;
  std::string note;
  if (m.unparsable > 0) {
    note = svg_text(8, H + 8, cat(m.unparsable, " unanswered images are in no cell"),
                    "font-size=\"11\" fill=\"#666\"");
    H += 16;
  }
  return svg_open(W, H, "confusion matrix of " + m.name) + chart_title(8, m.name) +
         svg_text(8, 38, "confusion matrix (rows: truth, columns: prediction)",
                  "font-size=\"12\" fill=\"#555\"") +
         "\n" + body + note + "</svg>\n";
}

std::string f1_svg(const std::vector<const Model*>& ms, const std::vector<std::string>& labels,
                   double level) {
  const size_t C = labels.size();
  const double W = kWidth, left = 64, right = W - 16, top = 70;
  bool any_ci = false;
  for (const Model* m : ms)
    for (const auto& ci : m->f1_ci) any_ci = any_ci || ci.has_value();
  std::vector<LegendEntry> entries;
  for (const Model* m : ms) entries.push_back({LegendEntry::Box, m->colour, m->name});
  if (any_ci)
    entries.push_back({LegendEntry::Whisker, "#333", level_text(level) + " bootstrap interval"});
  const double slot = (right - left) / C, plot_h = 240;
  std::vector<std::string> supports;
  for (size_t c = 0; c < C; ++c) supports.push_back(cat("n = ", ms[0]->support[c]));
  double below = 0;
  const std::string cats = category_labels(labels, supports, left, slot, top + plot_h, 24, &below);
  const double bottom = top + plot_h, H = bottom + below + 30;
  std::string s =
      svg_open(W, H, "per-class F1") +
      chart_title(8, any_ci ? "Per-class F1 with " + level_text(level) + " bootstrap intervals"
                            : "Per-class F1") +
      legend(8, 46, entries) + value_axis(0, 100, 20, left, right, top, bottom, false, true) +
      vertical_text(16, (top + bottom) / 2, "F1 (%)") + cats +
      svg_text((left + right) / 2, H - 8, "class (n: test images of the class)",
               "font-size=\"12\" text-anchor=\"middle\" font-weight=\"bold\"") +
      "\n";
  const double bw = slot * 0.76 / ms.size();
  auto y_of = [&](double v) { return bottom - plot_h * v; };
  for (size_t c = 0; c < C; ++c)
    for (size_t k = 0; k < ms.size(); ++k) {
      const Model& m = *ms[k];
      const double x = left + slot * c + slot * 0.12 + bw * k, cx = x + bw / 2;
      std::string tip = cat(labels[c], ", ", m.name, ": F1 ", pct(m.f1[c]), "%");
      if (m.f1_ci[c]) tip += " " + interval_text(*m.f1_ci[c]);
      s += "<g>" + tooltip(tip) + rect(x + 1, y_of(m.f1[c]), bw - 2, plot_h * m.f1[c], m.colour);
      if (m.f1_ci[c]) {
        const double lo = y_of(m.f1_ci[c]->lo), hi = y_of(m.f1_ci[c]->hi),
                     cap = std::min(8.0, bw * 0.5);
        s += line(cx, lo, cx, hi, "#333", 1.5) +
             line(cx - cap / 2, lo, cx + cap / 2, lo, "#333", 1.5) +
             line(cx - cap / 2, hi, cx + cap / 2, hi, "#333", 1.5);
      }
      s += "</g>\n";
    }
  return s + line(left, bottom, right, bottom, "#555") + "</svg>\n";
}

std::string accuracy_svg(const std::vector<Model>& models, const Report& r) {
  const double W = kWidth, left = 190, right = W - 60, top = 62, row = 30;
  const double bottom = top + row * models.size(), H = bottom + 48;
  bool any_ci = false;
  for (const Model& m : models) any_ci = any_ci || m.accuracy_ci.has_value();
  std::vector<LegendEntry> entries = {
      {LegendEntry::Box, "#888888", "test accuracy (colour: the model's)"}};
  if (any_ci)
    entries.push_back({LegendEntry::Whisker, "#333", level_text(r.level) + " bootstrap interval"});
  if (r.oracle)
    entries.push_back({LegendEntry::Dashed, "#59a14f", "oracle: the VLM or the head right"});
  auto x_of = [&](double v) { return left + (right - left) * v; };
  std::string s = svg_open(W, H, "test accuracy per model") + chart_title(8, "Test accuracy") +
                  legend(8, 44, entries);
  for (int p = 0; p <= 100; p += 10) {
    s += line(x_of(p / 100.0), top, x_of(p / 100.0), bottom, "#e6e6e6") +
         line(x_of(p / 100.0), bottom, x_of(p / 100.0), bottom + 4, "#555");
    s += svg_text(x_of(p / 100.0), bottom + 16, std::to_string(p),
                  "font-size=\"11\" text-anchor=\"middle\"");
  }
  s += svg_text((left + right) / 2, H - 6, "test accuracy (%)",
                "font-size=\"12\" text-anchor=\"middle\" font-weight=\"bold\"") +
       "\n";
  for (size_t i = 0; i < models.size(); ++i) {
    const Model& m = models[i];
    const double y = top + row * i, cy = y + row / 2;
    std::string tip = cat(m.name, ": ", pct(m.accuracy, 2), "%");
    if (m.accuracy_ci) tip += " " + interval_text(*m.accuracy_ci);
    s += "<g>" + tooltip(tip) +
         svg_text(left - 8, cy + 4, m.name, "font-size=\"12\" text-anchor=\"end\"") +
         rect(left, y + 6, x_of(m.accuracy) - left, row - 12, m.colour);
    double label_x = x_of(m.accuracy) + 6;
    if (m.accuracy_ci) {
      const double lo = x_of(m.accuracy_ci->lo), hi = x_of(m.accuracy_ci->hi);
      s += line(lo, cy, hi, cy, "#333", 1.5) + line(lo, cy - 6, lo, cy + 6, "#333", 1.5) +
           line(hi, cy - 6, hi, cy + 6, "#333", 1.5);
      label_x = hi + 6;
    }
    s += svg_text(label_x, cy + 4, pct(m.accuracy) + "%", "font-size=\"11\"") + "</g>\n";
  }
  if (r.oracle) {
    const double x = x_of(*r.oracle);
    s += "<g>" + tooltip("oracle (the VLM or the head right): " + pct(*r.oracle, 2) + "%") +
         line(x, top - 4, x, bottom, "#59a14f", 2, " stroke-dasharray=\"5 3\"") + "</g>\n";
  }
  return s + line(left, top, left, bottom, "#555") + "</svg>\n";
}

std::string complementarity_svg(const std::vector<Pair>& pairs) {
  const double W = kWidth, left = 190, right = W - 24, top = 66, row = 34, gap = 16;
  const double bottom = top + pairs.size() * (row + gap) - gap, H = bottom + 50;
  const char* colours[4] = {"#59a14f", "#4e79a7", "#f28e2b", "#bab0ac"};
  const char* ink[4] = {"#fff", "#fff", "#222", "#222"};
  const std::vector<LegendEntry> entries = {{LegendEntry::Box, colours[0], "both right"},
                                            {LegendEntry::Box, colours[1], "only the first right"},
                                            {LegendEntry::Box, colours[2], "only the second right"},
                                            {LegendEntry::Box, colours[3], "both wrong"}};
  auto x_of = [&](double v) { return left + (right - left) * v; };
  std::string s =
      svg_open(W, H, "complementarity") +
      chart_title(8, "Complementarity: which of two models is right (the paper's Figure 1)") +
      legend(8, 46, entries);
  for (int p = 0; p <= 100; p += 10) {
    s += line(x_of(p / 100.0), bottom, x_of(p / 100.0), bottom + 4, "#555") +
         svg_text(x_of(p / 100.0), bottom + 16, std::to_string(p),
                  "font-size=\"11\" text-anchor=\"middle\"");
  }
  s += svg_text((left + right) / 2, H - 8, "share of the test images (%)",
                "font-size=\"12\" text-anchor=\"middle\" font-weight=\"bold\"") +
       "\n";
  for (size_t i = 0; i < pairs.size(); ++i) {
    const Pair& p = pairs[i];
    const int64_t counts[4] = {p.both_right, p.only_first, p.only_second, p.both_wrong};
    const std::string names[4] = {"both right", "only " + p.first + " right",
                                  "only " + p.second + " right", "both wrong"};
    const double n = static_cast<double>(counts[0] + counts[1] + counts[2] + counts[3]);
    const double y = top + i * (row + gap);
    s += svg_text(left - 8, y + row / 2 - 2, p.first + " vs " + p.second,
                  "font-size=\"13\" text-anchor=\"end\"") +
         svg_text(left - 8, y + row / 2 + 12, "(first vs second)",
                  "font-size=\"10\" text-anchor=\"end\" fill=\"#666\"") +
         "\n";
    double acc = 0;
    for (int k = 0; k < 4; ++k) {
      const double share = n > 0 ? counts[k] / n : 0, x0 = x_of(acc), x1 = x_of(acc + share);
      s += "<g>" + tooltip(cat(names[k], ": ", counts[k], " images (", pct(share), "%)")) +
           rect(x0, y, x1 - x0, row, colours[k]);
      const std::string label = pct(share) + "%";
      if (x1 - x0 >= text_px(label, 11) + 6)
        s += svg_text(
            (x0 + x1) / 2, y + row / 2 + 4, label,
            std::string("font-size=\"11\" text-anchor=\"middle\" fill=\"") + ink[k] + "\"");
      s += "</g>\n";
      acc += share;
    }
  }
  return s + line(left, top - 4, left, bottom, "#555") + "</svg>\n";
}

std::string curve_svg(const std::string& title, const std::vector<CurvePoint>& pts) {
  const double W = (kWidth - 12) / 2, H = 330, left = 58, right = W - 62, top = 64, bottom = H - 46;
  double e0 = pts.front().epoch, e1 = e0, a0 = 1, a1 = 0, l1 = 0;
  bool any_val = false, any_loss = false;
  for (const CurvePoint& p : pts) {
    e0 = std::min(e0, p.epoch), e1 = std::max(e1, p.epoch);
    if (p.val) any_val = true, a0 = std::min(a0, *p.val), a1 = std::max(a1, *p.val);
    if (p.loss) any_loss = true, l1 = std::max(l1, *p.loss);
  }
  if (e1 - e0 < 1) e0 -= 0.5, e1 += 0.5;
  // accuracy axis: the values' range widened to whole steps; loss axis: from 0
  const double astep = nice_step(std::max(100 * (a1 - a0), 4.0), 5);
  const double alo =
      any_val ? std::max(0.0, std::floor((100 * a0 - astep / 2) / astep) * astep) : 0;
  const double ahi =
      any_val ? std::min(100.0, std::ceil((100 * a1 + astep / 2) / astep) * astep) : 100;
  const double lstep = nice_step(l1 > 0 ? l1 : 1, 5),
               lhi = std::max(lstep, std::ceil(l1 / lstep) * lstep);
  auto x_of = [&](double e) { return left + (right - left) * (e - e0) / (e1 - e0); };
  auto ya = [&](double v) { return bottom - (bottom - top) * (100 * v - alo) / (ahi - alo); };
  auto yl = [&](double v) { return bottom - (bottom - top) * v / lhi; };
  std::vector<LegendEntry> entries;
  if (any_val) entries.push_back({LegendEntry::Line, "#4e79a7", "validation accuracy (left axis)"});
  if (any_loss) entries.push_back({LegendEntry::Dashed, "#e15759", "train loss (right axis)"});
  std::string s = svg_open(W, H, title) + chart_title(8, title) + legend(8, 44, entries);
  if (any_val) s += value_axis(alo, ahi, astep, left, right, top, bottom, false, true);
  if (any_loss) s += value_axis(0, lhi, lstep, left, right, top, bottom, true, !any_val);
  const double estep = std::max(1.0, nice_step(e1 - e0, 8));
  for (double e = std::ceil(e0 / estep) * estep; e <= e1 + 1e-9; e += estep)
    s += line(x_of(e), bottom, x_of(e), bottom + 4, "#555") +
         svg_text(x_of(e), bottom + 16, tick_text(e, estep),
                  "font-size=\"11\" text-anchor=\"middle\"");
  s += line(left, bottom, right, bottom, "#555");
  s += svg_text((left + right) / 2, H - 8, "epoch",
                "font-size=\"12\" text-anchor=\"middle\" font-weight=\"bold\"");
  if (any_val) s += vertical_text(14, (top + bottom) / 2, "validation accuracy (%)");
  if (any_loss) s += vertical_text(W - 12, (top + bottom) / 2, "train loss (mean per image)");
  s += "\n";
  // the lines break where a value is missing
  auto polyline = [&](auto value_of, auto y_of, const std::string& colour,
                      const std::string& extra) {
    std::string out, pts_attr;
    auto flush = [&] {
      if (!pts_attr.empty())
        out += "<polyline fill=\"none\" stroke=\"" + colour + "\" stroke-width=\"2\"" + extra +
               " points=\"" + pts_attr + "\"/>\n";
      pts_attr.clear();
    };
    for (const CurvePoint& p : pts) {
      const std::optional<double> v = value_of(p);
      if (!v) {
        flush();
        continue;
      }
      pts_attr += (pts_attr.empty() ? "" : " ") + num(x_of(p.epoch)) + "," + num(y_of(*v));
    }
    flush();
    for (const CurvePoint& p : pts)
      if (const std::optional<double> v = value_of(p))
        out += "<circle cx=\"" + num(x_of(p.epoch)) + "\" cy=\"" + num(y_of(*v)) +
               "\" r=\"3\" fill=\"" + colour + "\">" +
               tooltip(cat("epoch ", tick_text(p.epoch, 1), ": ", fmt("%.4g", *v))) + "</circle>\n";
    return out;
  };
  if (any_val) s += polyline([](const CurvePoint& p) { return p.val; }, ya, "#4e79a7", "");
  if (any_loss)
    s += polyline([](const CurvePoint& p) { return p.loss; }, yl, "#e15759",
                  " stroke-dasharray=\"6 3\"");
  return s + "</svg>\n";
}

// ---- the page
// ------------------------------------------------------------------------------------

const char* const kStyle =
    R"(body{margin:0;background:#fff;color:#222;font-family:sans-serif;font-size:14px}
main{max-width:1104px;margin:0 auto;padding:12px 24px 32px}
h1{font-size:24px;margin:10px 0 4px}
h2{font-size:18px;margin:28px 0 10px;padding-bottom:4px;border-bottom:1px solid #ddd}
p{margin:6px 0;line-height:1.45}
.meta{color:#555}
.warn{color:#a33}
table{border-collapse:collapse;margin:6px 0 12px}
th,td{padding:5px 12px;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f6f6f6}
th:first-child,td:first-child{text-align:left}
.key{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}
.ci{color:#666;font-size:12px}
.row{display:flex;flex-wrap:wrap;gap:12px}
svg{font-family:sans-serif;display:block;margin:6px 0}
)";

std::string models_table(const Report& r) {
  std::string s =
      "<table>\n<tr><th>model</th><th>parameters</th><th>accuracy %</th><th>macro-F1 "
      "%</th><th>weighted F1 %</th>"
      "<th>unanswered</th><th>images</th></tr>\n";
  for (const Model& m : r.models) {
    s += "<tr><td><span class=\"key\" style=\"background:" + m.colour + "\"></span>" +
         html_escape(m.name);
    if (!m.gate.empty()) s += " <span class=\"ci\">(gate: " + html_escape(m.gate) + ")</span>";
    s += "</td><td>" + (m.parameters ? human(*m.parameters) : std::string("?")) + "</td><td>" +
         pct(m.accuracy, 2);
    if (m.accuracy_ci) s += " <span class=\"ci\">" + interval_text(*m.accuracy_ci) + "</span>";
    s += "</td><td>" + pct(m.macro_f1, 2);
    if (m.macro_f1_ci) s += " <span class=\"ci\">" + interval_text(*m.macro_f1_ci) + "</span>";
    s += "</td><td>" + pct(m.weighted_f1, 2) + "</td><td>" + std::to_string(m.unparsable) +
         "</td><td>" + std::to_string(m.n) + "</td></tr>\n";
  }
  s += "</table>\n";
  bool any_ci = false;
  for (const Model& m : r.models) any_ci = any_ci || m.accuracy_ci || m.macro_f1_ci;
  if (any_ci) {
    s +=
        "<p class=\"meta\">In brackets: " + level_text(r.level) + " bootstrap percentile intervals";
    if (r.bootstrap) s += cat(" over ", r.resamples, " resamples of the test images");
    s += ".</p>\n";
  }
  return s;
}

std::string gain_paragraphs(const Report& r) {
  std::string s;
  for (const Gain& g : r.gains) {
    const std::string verdict = g.ci.lo > 0   ? "EmoVLM-KD beats " + g.input_name
                                : g.ci.hi < 0 ? "EmoVLM-KD is worse than " + g.input_name
                                              : "EmoVLM-KD does not clearly beat " + g.input_name;
    s += "<p><b>" + html_escape(verdict) + "</b>: " + signed_points(g.difference) +
         " percentage points of accuracy (" + level_text(r.level) + " interval " +
         signed_points(g.ci.lo) + " to " + signed_points(g.ci.hi) +
         (g.ci.lo <= 0 && g.ci.hi >= 0 ? ", which includes zero" : "") + "). It is right on " +
         std::to_string(g.only_kd) + (g.only_kd == 1 ? " image where " : " images where ") +
         html_escape(g.input_name) + " is wrong, and wrong on " + std::to_string(g.only_input) +
         " where it is right (McNemar " + html_escape(p_value_text(g.p)) + ").</p>\n";
  }
  if (r.oracle) {
    s += "<p>Oracle: " + pct(*r.oracle, 2) +
         "% of the images have the VLM or the distillation head right";
    if (r.oracle_ci)
      s += " (" + level_text(r.level) + " interval " + interval_text(*r.oracle_ci) + ")";
    s += ", the most a gate choosing between them could reach.</p>\n";
  }
  if (r.gate_beats_inputs)
    s += std::string("<p>") +
         (*r.gate_beats_inputs
              ? "The gate's accuracy is above both of its inputs'."
              : "The gate's accuracy is not above the better of its inputs' on this data.") +
         "</p>\n";
  return s;
}

}  // namespace

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string p_value_text(double p) {
  return p < 0.001 ? "p < 0.001" : fmt("p = %.3f", p);
}

std::string evaluation_html(const json& report) {
  const Report r = read_report(report);
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>EmoVLM-KD "
      "evaluation: " +
      html_escape(r.cache) + "</title>\n<style>\n" + kStyle + "</style>\n</head>\n<body>\n<main>\n";
  h += "<h1>Evaluation on " + html_escape(r.cache) + "</h1>\n<p class=\"meta\">" +
       std::to_string(r.images) + " test images, " + std::to_string(r.labels.size()) + " classes";
  if (!r.vlm_mode.empty()) h += ", VLM answers by " + html_escape(r.vlm_mode);
  h += ".</p>\n";
  if (r.shared_images && *r.shared_images > 0)
    h += "<p class=\"warn\">" + std::to_string(*r.shared_images) +
         " test images are also in the distillation head's training cache: these figures overstate "
         "it.</p>\n";

  h += "<h2>Models</h2>\n" + models_table(r) + accuracy_svg(r.models, r);
  if (!r.gains.empty() || r.oracle || r.gate_beats_inputs)
    h += "<h2>Does EmoVLM-KD beat its inputs?</h2>\n" + gain_paragraphs(r);

  std::vector<const Model*> shown;
  for (const char* key : {"vlm", "distill_head", "emovlm_kd"})
    if (const Model* m = r.find(key)) shown.push_back(m);
  if (shown.empty())
    for (const Model& m : r.models) shown.push_back(&m);
  h += "<h2>Confusion matrices</h2>\n<div class=\"row\">\n";
  for (const Model* m : shown) h += confusion_svg(*m, r.labels);
  h += "</div>\n<h2>Per-class F1</h2>\n" + f1_svg(shown, r.labels, r.level);
  if (!r.pairs.empty()) h += "<h2>Complementarity</h2>\n" + complementarity_svg(r.pairs);
  // a curve with neither a loss nor a validation accuracy has nothing to draw
  auto drawable = [](const std::vector<CurvePoint>& c) {
    return std::any_of(c.begin(), c.end(), [](const CurvePoint& p) { return p.loss || p.val; });
  };
  if (drawable(r.distill_curve) || drawable(r.gate_curve)) {
    h += "<h2>Training curves</h2>\n<div class=\"row\">\n";
    if (drawable(r.distill_curve))
      h += curve_svg("Stage 2: the distillation head", r.distill_curve);
    if (drawable(r.gate_curve)) h += curve_svg("Stage 3: the gate", r.gate_curve);
    h += "</div>\n";
  }
  return h + "</main>\n</body>\n</html>\n";
}

}  // namespace emovlm
