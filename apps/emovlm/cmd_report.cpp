// `emovlm report-html REPORT.json [--out FILE]`: evaluate's report as a self-contained HTML page.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/pipeline/report_html.h"

namespace emovlm::cli {

namespace {

struct ReportArgs {
  std::string report, out;
};

void run_report_html(const ReportArgs& a) {
  const json report = read_json_file(a.report);
  std::string page;
  try {
    page = evaluation_html(report);
  } catch (const Error& e) {
    throw Error(cat(a.report, ": ", e.what()));
  }
  const std::string out =
      a.out.empty() ? (std::filesystem::path(a.report).parent_path() / "report.html").string()
                    : a.out;
  write_file_atomic(out, page);
  std::printf("wrote %s\n", out.c_str());
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  CLI::App* cmd = app.add_subcommand("report-html",
                                     "Render an evaluation report.json as an HTML page of figures");
  cmd->add_option("report", a->report, "the report.json that `emovlm evaluate --out DIR` wrote")
      ->required();
  add_out_flag(cmd, a->out, "the HTML file to write (default: report.html beside the report)",
               false);
  cmd->callback([a] { run_report_html(*a); });
}

}  // namespace emovlm::cli
