// The feature cache's manifest.json (see feature_cache.h), read and checked field by field: a
// cache is a folder users copy, move and sometimes damage, so every field the readers use is
// checked for its type and range here, with an error naming the file and the field, before a
// number reaches an index or a path reaches the file system. Torch-free (the fuzzers read it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace emovlm {

// Format version 2: image paths stored relative to the cache folder, the models' parameter counts,
// and each shard's split and inputs in its metadata. Version 1 caches are read, not resumed.
constexpr int kFeatureCacheVersion = 2;

struct CacheManifest {
  struct Entry {
    std::string path;  // as stored (version 2: relative to the manifest's folder)
    int64_t label = -1;
    std::string hash;  // the image file's content hash ("" when it could not be read)
  };
  struct Shard {
    std::string file;  // a file name in the cache folder
    int64_t cached = 0;
    bool has_answers = false;
    std::vector<std::string> answers;  // generate mode: each cached image's answer
  };
  int version = 0;
  bool complete = false;
  nlohmann::json inputs;            // what the values were computed from (object)
  std::vector<std::string> labels;  // inputs.labels
  std::string split;                // inputs.split ("" in caches that predate it)
  std::vector<Entry> entries;
  std::vector<Shard> shards;
  nlohmann::json raw;  // the whole manifest

  // Checks `m`, the manifest read from `mpath`; an Error names mpath and the first bad field.
  static CacheManifest parse(const nlohmann::json& m, const std::string& mpath);
  // Reads and checks DIR/manifest.json ("not a feature cache" when there is none).
  static CacheManifest read_dir(const std::string& dir);
  // Entry k's image path as this process opens it.
  std::string entry_path(size_t k, const std::string& mpath) const;
};

}  // namespace emovlm
