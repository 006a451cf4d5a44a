// The evaluation report (evaluate's report.json) as one self-contained HTML page: inline SVG
// charts and CSS, no scripts, no fonts or files from elsewhere.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>

namespace emovlm {

// The page for a report as evaluate writes it: the models table (accuracy and macro-F1 with
// their bootstrap intervals), whether EmoVLM-KD beats each input (difference, interval,
// McNemar p), the confusion matrices, per-class F1, the complementarity of the VLM with the
// teacher and the head (the paper's Figure 1) and the training curves of stages 2 and 3. Parts
// whose fields a report lacks (intervals, gain, oracle, curves: older reports) are left out.
// Throws Error naming the field when a required field is missing or malformed.
std::string evaluation_html(const nlohmann::json& report);

// "p = 0.012", or "p < 0.001" below a thousandth.
std::string p_value_text(double p);

// `s` with &, <, >, " and ' as character references, for HTML text and attribute values.
std::string html_escape(const std::string& s);

}  // namespace emovlm
