// The feature cache's manifest.json read field by field: what extract writes is accepted, and
// every damaged field is refused with one error naming the file and the field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>

#include "emovlm/core/error.h"
#include "emovlm/data/cache_manifest.h"

using namespace emovlm;
using json = nlohmann::json;

namespace {

json valid() {
  return json::parse(
      R"({"format": "emovlm-feature-cache", "version": 2, "complete": true, "shard_size": 2,
    "inputs": {"labels": ["awe", "fear"], "split": "val", "vlm": {}},
    "entries": [{"path": "../data/val/awe/a.jpg", "label": 0, "bytes": 10, "hash": "ab"},
                {"path": "/data/val/fear/b.jpg", "label": 1, "bytes": -1, "hash": ""}],
    "shards": [{"file": "shard-00000.safetensors", "first": 0, "count": 2, "cached": 1, "failures": []},
               {"file": "shard-00001.safetensors", "cached": 0, "answers": []}]})");
}

// The error `m` gets, "" when it is accepted.
std::string error_of(const json& m) {
  try {
    CacheManifest::parse(m, "cache/manifest.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(CacheManifest, ReadsWhatExtractWrites) {
  const CacheManifest m = CacheManifest::parse(valid(), "runs/cache/manifest.json");
  EXPECT_EQ(m.version, 2);
  EXPECT_TRUE(m.complete);
  EXPECT_EQ(m.labels, (std::vector<std::string>{"awe", "fear"}));
  EXPECT_EQ(m.split, "val");
  ASSERT_EQ(m.entries.size(), 2u);
  EXPECT_EQ(m.entries[1].label, 1);
  EXPECT_EQ(m.entries[1].hash, "");
  ASSERT_EQ(m.shards.size(), 2u);
  EXPECT_EQ(m.shards[0].cached, 1);
  EXPECT_FALSE(m.shards[0].has_answers);
  EXPECT_TRUE(m.shards[1].has_answers);
  // version 2 stores paths relative to the manifest's folder; absolute ones stay
  EXPECT_EQ(m.entry_path(0, "runs/cache/manifest.json"), "runs/data/val/awe/a.jpg");
  EXPECT_EQ(m.entry_path(1, "runs/cache/manifest.json"), "/data/val/fear/b.jpg");
  json v1 = valid();
  v1["version"] = 1;
  EXPECT_EQ(CacheManifest::parse(v1, "runs/cache/manifest.json")
                .entry_path(0, "runs/cache/manifest.json"),
            "../data/val/awe/a.jpg");
}

TEST(CacheManifest, RefusesDamagedFieldsNamingThem) {
  EXPECT_EQ(error_of(valid()), "");
  auto with = [](const std::string& pointer, const json& value) {
    json m = valid();
    m[json::json_pointer(pointer)] = value;
    return error_of(m);
  };
  auto without = [](const std::string& key) {
    json m = valid();
    m.erase(key);
    return error_of(m);
  };
  EXPECT_EQ(error_of(json::array()), "cache/manifest.json: not a feature cache manifest");
  EXPECT_EQ(with("/format", "other"), "cache/manifest.json: not a feature cache manifest");
  EXPECT_NE(with("/version", 3).find("format version 3; this build reads 1 to 2"),
            std::string::npos);
  // a double beyond every integer type: refused, never converted (undefined behaviour)
  EXPECT_NE(with("/version", 19e99).find("field 'version' is not an integer in range"),
            std::string::npos);
  EXPECT_NE(without("inputs").find("missing field 'inputs'"), std::string::npos);
  EXPECT_NE(with("/inputs/labels", json::array()).find("'labels' is empty"), std::string::npos);
  EXPECT_NE(
      with("/inputs/labels", "awe").find("inputs: field 'labels' has the wrong type (string)"),
      std::string::npos);
  EXPECT_NE(with("/entries", json::object()).find("field 'entries' has the wrong type (object)"),
            std::string::npos);
  EXPECT_NE(with("/entries/1/label", 2).find("entries[1]: label 2 outside 0..1"),
            std::string::npos);
  EXPECT_NE(with("/entries/0/path", 7).find("entries[0]: field 'path' has the wrong type"),
            std::string::npos);
  EXPECT_NE(
      with("/shards/0/cached", 1e99).find("shards[0]: field 'cached' is not an integer in range"),
      std::string::npos);
  EXPECT_NE(with("/shards/0/cached", 3).find("shards[0]: 'cached' is 3, outside 0..2"),
            std::string::npos);
  EXPECT_NE(with("/shards/1/answers", json::array({1}))
                .find("shards[1]: field 'answers' has the wrong type"),
            std::string::npos);
  for (const char* file : {"../x.safetensors", "/etc/x", "a\\b", "..", ""})
    EXPECT_NE(with("/shards/0/file", file).find("'file' must be a file name in the cache folder"),
              std::string::npos)
        << file;
  EXPECT_NE(with("/shards/0", 5).find("shards[0] is not an object"), std::string::npos);
}
