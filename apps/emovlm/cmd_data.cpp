// `emovlm data convert` (native dataset files -> a JSONL manifest) and `emovlm data check`
// (counts, duplicates, unreadable files).
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "commands.h"
#include "emovlm/core/error.h"
#include "emovlm/data/check.h"
#include "emovlm/data/convert.h"

namespace emovlm::cli {

namespace {

using json = nlohmann::json;

void print_check(const json& r, const std::string& out) {
  std::cout << r["summary"].dump(1) << std::endl;
  const int64_t extra = r["duplicate_extra_copies"].get<int64_t>();
  std::printf(
      "duplicate groups: %lld (%lld extra %s), across splits: %lld, under different labels: "
      "%lld\n",
      static_cast<long long>(r["duplicate_groups"].get<int64_t>()), static_cast<long long>(extra),
      extra == 1 ? "copy" : "copies",
      static_cast<long long>(r["cross_split_duplicates"].get<int64_t>()),
      static_cast<long long>(r["conflicting_labels"].get<int64_t>()));
  std::printf("unreadable: %zu\n", r["unreadable"].size());
  for (const auto& u : r["unreadable"])
    std::printf("  %s\n", u["error"].get<std::string>().c_str());
  if (r.contains("sizes") && !r["sizes"]["width"].empty())
    std::printf("sizes: width %d..%d (median %d), height %d..%d (median %d)\n",
                r["sizes"]["width"]["min"].get<int>(), r["sizes"]["width"]["max"].get<int>(),
                r["sizes"]["width"]["median"].get<int>(), r["sizes"]["height"]["min"].get<int>(),
                r["sizes"]["height"]["max"].get<int>(), r["sizes"]["height"]["median"].get<int>());
  if (!out.empty()) std::printf("report: %s\n", out.c_str());
}

// What makes a dataset unfit to train and test on as it is: unreadable files, the same image in
// two splits (a test image the model trained on), the same image under two labels. The check
// then fails (after its report), so that a script stops there; duplicates within a split under
// one label are reported only.
void fail_on_problems(const json& r, const std::string& data) {
  std::vector<std::string> problems;
  if (const size_t n = r["unreadable"].size()) problems.push_back(cat(n, " unreadable"));
  if (const int64_t n = r["cross_split_duplicates"].get<int64_t>())
    problems.push_back(cat(n, " duplicate ", n == 1 ? "group" : "groups", " across splits"));
  if (const int64_t n = r["conflicting_labels"].get<int64_t>())
    problems.push_back(
        cat(n, " duplicate ", n == 1 ? "group" : "groups", " under different labels"));
  if (problems.empty()) return;
  std::string list;
  for (const std::string& p : problems) list += (list.empty() ? "" : ", ") + p;
  throw Error(cat(data, ": the check found problems (", list, "; listed above)"));
}

}  // namespace

void add_data_command(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "Dataset tools");
  data->require_subcommand(1);

  auto cv = std::make_shared<ConvertOptions>();
  CLI::App* conv = data->add_subcommand(
      "convert",
      "Native EmoSet / Emotion6 / vote-count files or image folders -> a JSONL manifest");
  conv->add_option(
          "--format", cv->format,
          "emoset, emotion6, votes (Flickr, Instagram) or folders (ROOT/<emotion>/, as FI)")
      ->required()
      ->check(CLI::IsMember({"emoset", "emotion6", "votes", "flickr", "instagram", "folders"}));
  conv->add_option("--src", cv->src, "the dataset root (votes: the vote-count file)")->required();
  conv->add_option("--images", cv->images,
                   "where the images are (default: the format's place under --src)");
  conv->add_option("--test-fraction", cv->test_fraction,
                   "share of the images without a split written as test (e.g. 0.15)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0))
      ->group(kDataGroup);
  conv->add_option("--val-fraction", cv->val_fraction, "share of them written as val (e.g. 0.05)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0))
      ->group(kDataGroup);
  conv->add_option("--split-seed", cv->split_seed, "seed of those splits")
      ->capture_default_str()
      ->group(kDataGroup);
  add_out_flag(conv, cv->out, "the manifest to write (.jsonl)");
  conv->callback([cv] { std::cout << convert_dataset(*cv).dump(1) << std::endl; });

  auto ck = std::make_shared<CheckOptions>();
  CLI::App* chk = data->add_subcommand(
      "check", "Counts, duplicate images (across splits, under two labels), unreadable files");
  add_data_flag(chk, ck->data, "a dataset root (ROOT/{train,val,test}/<emotion>/) or manifest");
  add_dataset_flags(chk, ck->dataset);
  chk->add_flag("--decode", ck->decode,
                "decode every image too (finds truncated and corrupt files; slower)");
  add_out_flag(chk, ck->out, "write the full report here (.json; default: the summary only)",
               false);
  chk->callback([ck] {
    const json report = check_dataset(*ck);
    print_check(report, ck->out);
    fail_on_problems(report, ck->data);
  });
}

}  // namespace emovlm::cli
