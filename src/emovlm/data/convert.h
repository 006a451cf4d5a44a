// Converters from the native distributions of the public datasets to a JSONL manifest (paths,
// labels, splits, soft labels), without copying images: EmoSet-118K (train/val/test JSON files,
// its own non-alphabetical label order), Emotion6 (ground_truth.txt: the dominant emotion among the
// six, the full distribution kept), Flickr/Instagram (per-polarity vote counts: the majority, ties
// reported and left out), and image folders (ROOT/<emotion>/ as the FI download comes, or
// ROOT/{train,val,test}/<emotion>/). The datasets that ship no test split get one written into
// the manifest (--test-fraction, stratified and seeded), so that every later command reads the
// same split from the file instead of recomputing it.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace emovlm {

struct ConvertOptions {
  std::string format;  // emoset | emotion6 | votes | folders
  std::string src;     // the dataset's root (or the votes file)
  std::string images;  // where the images are ("" = the format's default under src)
  std::string out;     // the manifest (.jsonl)
  // Shares of the images without a split (both of all of them: 0.15 and 0.05 give 80/5/15) that
  // become the test and the validation split, stratified per label and seeded (the test split as
  // load_dataset would cut it from the manifest); the rest is written as train. Both 0: the rows
  // keep no split (train, with load_dataset's seeded validation share at every load).
  double test_fraction = 0.0, val_fraction = 0.0;
  uint64_t split_seed = 42;
};

// Writes the manifest atomically; returns a report (counts, missing images, ties).
nlohmann::json convert_dataset(const ConvertOptions& options);

}  // namespace emovlm
