// The feature cache's manifest, checked (see cache_manifest.h).
#include "emovlm/data/cache_manifest.h"

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/paths.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

// Field `key` of object j, which must be of `type` (an object or an array).
const json& member(const json& j, const std::string& key, json::value_t type,
                   const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) throw Error(cat(where, ": missing field '", key, "'"));
  if (it->type() != type)
    throw Error(cat(where, ": field '", key, "' has the wrong type (", it->type_name(), ")"));
  return *it;
}

}  // namespace

CacheManifest CacheManifest::parse(const json& m, const std::string& mpath) {
  if (!m.is_object() || m.value("format", json()) != "emovlm-feature-cache")
    throw Error(cat(mpath, ": not a feature cache manifest"));
  CacheManifest c;
  c.raw = m;
  c.version = json_optional<int>(m, "version", 0, mpath);
  if (c.version < 1 || c.version > kFeatureCacheVersion)
    throw Error(cat(mpath, ": a feature cache of format version ", c.version,
                    "; this build reads 1 to ", kFeatureCacheVersion));
  c.complete = json_optional<bool>(m, "complete", false, mpath);
  c.inputs = member(m, "inputs", json::value_t::object, mpath);
  c.labels = json_required<std::vector<std::string>>(c.inputs, "labels", mpath + ": inputs");
  if (c.labels.empty()) throw Error(cat(mpath, ": inputs: field 'labels' is empty"));
  c.split = json_optional<std::string>(c.inputs, "split", "", mpath + ": inputs");

  const json& entries = member(m, "entries", json::value_t::array, mpath);
  for (size_t k = 0; k < entries.size(); ++k) {
    const std::string where = cat(mpath, ": entries[", k, "]");
    const json& e = entries[k];
    if (!e.is_object()) throw Error(cat(where, " is not an object"));
    Entry entry;
    entry.path = json_required<std::string>(e, "path", where);
    entry.label = json_optional<int64_t>(e, "label", -1, where);
    entry.hash = json_optional<std::string>(e, "hash", "", where);
    if (entry.label < 0 || entry.label >= static_cast<int64_t>(c.labels.size()))
      throw Error(cat(where, ": label ", entry.label, " outside 0..", c.labels.size() - 1));
    c.entries.push_back(std::move(entry));
  }

  const json& shards = member(m, "shards", json::value_t::array, mpath);
  for (size_t k = 0; k < shards.size(); ++k) {
    const std::string where = cat(mpath, ": shards[", k, "]");
    const json& sh = shards[k];
    if (!sh.is_object()) throw Error(cat(where, " is not an object"));
    Shard shard;
    shard.file = json_required<std::string>(sh, "file", where);
    // a file of this folder, never a path elsewhere
    if (shard.file.empty() || shard.file == "." || shard.file == ".." ||
        shard.file.find('/') != std::string::npos || shard.file.find('\\') != std::string::npos)
      throw Error(
          cat(where, ": 'file' must be a file name in the cache folder, not '", shard.file, "'"));
    shard.cached = json_required<int64_t>(sh, "cached", where);
    if (shard.cached < 0 || shard.cached > static_cast<int64_t>(c.entries.size()))
      throw Error(cat(where, ": 'cached' is ", shard.cached, ", outside 0..", c.entries.size(),
                      " (the manifest's entries)"));
    if (sh.contains("answers")) {
      shard.has_answers = true;
      shard.answers = json_required<std::vector<std::string>>(sh, "answers", where);
    }
    c.shards.push_back(std::move(shard));
  }
  return c;
}

CacheManifest CacheManifest::read_dir(const std::string& dir) {
  const std::string mpath = (fs::path(dir) / "manifest.json").string();
  if (!file_exists(mpath)) throw Error(cat(dir, ": not a feature cache (no manifest.json)"));
  return parse(read_json_file(mpath), mpath);
}

std::string CacheManifest::entry_path(size_t k, const std::string& mpath) const {
  const std::string& stored = entries.at(k).path;
  return version >= 2 ? resolve_stored_path(stored, mpath) : stored;
}

}  // namespace emovlm
