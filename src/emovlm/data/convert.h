// Converters from the native distributions of the public datasets to a JSONL manifest (paths,
// labels, splits, soft labels), without copying images: EmoSet-118K (train/val/test JSON files,
// its own non-alphabetical label order), Emotion6 (ground_truth.txt: the dominant emotion among the
// six, the full distribution kept), Flickr/Instagram (per-polarity vote counts: the majority, ties
// reported and left out).
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace emovlm {

struct ConvertOptions {
  std::string format;  // emoset | emotion6 | votes
  std::string src;     // the dataset's root (or the votes file)
  std::string images;  // where the images are ("" = the format's default under src)
  std::string out;     // the manifest (.jsonl)
};

// Writes the manifest atomically; returns a report (counts, missing images, ties).
nlohmann::json convert_dataset(const ConvertOptions& options);

}  // namespace emovlm
