// Datasets: the reference layout ROOT/{train,val,test}/<emotion>/<image> (a seeded stratified
// validation split when val/ is absent) or a CSV/JSONL manifest; class indices are the sorted
// label names, everywhere.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/data/labels.h"

namespace emovlm {

struct Sample {
  std::string path;
  int label = -1;
  std::map<std::string, float> soft;  // optional label distribution (e.g. Emotion6's)
};

struct DatasetOptions {
  std::string labels;          // "mikels8", "ekman6", "binary", "a,b,c"; empty: the folder names
  double val_fraction = 0.1;   // when there is no val split
  double test_fraction = 0.0;  // when there is no test split (manifests without one)
  uint64_t split_seed = 42;
};

struct Dataset {
  std::string source;  // root directory or manifest file
  LabelSet labels;
  std::vector<Sample> train, val, test;
  std::string val_origin;  // "val/", "manifest", or how it was split off train
  std::string test_origin;

  // "train", "val", "test"; throws for an unknown or empty split.
  const std::vector<Sample>& split(const std::string& name) const;
  nlohmann::json summary() const;
};

// A directory in the reference layout, or a .csv / .jsonl manifest. Errors before any training:
// an empty class, a label outside the label set, a split with no images.
Dataset load_dataset(const std::string& path, const DatasetOptions& options = {});

// The deterministic stratified split (the same on every run and machine): per class, a
// SplitMix64-seeded Fisher-Yates shuffle of the sorted paths, round(fraction * n) to the held-out
// part (at least one when the class has two or more). Returns {kept, held_out}.
std::pair<std::vector<Sample>, std::vector<Sample>> stratified_split(
    const std::vector<Sample>& samples, double fraction, uint64_t seed);

// A name with an image extension (case-insensitive): JPEG, PNG, GIF, BMP, WebP or TIFF.
bool is_image_file(const std::string& path);

// The files with an image extension under `dir`, any depth, sorted. Directory symlinks are
// followed, each directory once (a symlink loop ends there); an entry that cannot be inspected
// (a dangling link, a loop) is listed when its name is an image's, so that reading it reports it.
std::vector<std::string> list_image_files(const std::string& dir);

// Images that cannot be read, by a stat alone: missing, or not a regular file (a FIFO, a device,
// a directory, a symlink loop). Returns "path: reason" for each, in order.
std::vector<std::string> unreadable_by_stat(const std::vector<Sample>& samples);

// The policy for images that could not be read, once a command knows them: when none of `total`
// could be read, an Error naming the source and the first few; when more than 1% could not, a
// warning on stderr with the count (unless quiet). `errors` are messages that name the files.
void check_readable(const std::string& what, const std::string& source, size_t total,
                    const std::vector<std::string>& errors, bool quiet = false);

// SplitMix64: a tiny, portable PRNG for everything that must be reproducible across machines.
struct SplitMix64 {
  uint64_t state;
  explicit SplitMix64(uint64_t seed) : state(seed) {}
  uint64_t next();
  double uniform();            // [0, 1)
  uint64_t below(uint64_t n);  // [0, n)
};
uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c = 0);

// Fisher-Yates shuffle: for i = n down to 2, element i - 1 swaps with element rng.below(i). Every
// seeded shuffle of the project goes through here, so that its draws are the same everywhere.
template <typename T>
void shuffle_in_place(std::vector<T>& v, SplitMix64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

}  // namespace emovlm
