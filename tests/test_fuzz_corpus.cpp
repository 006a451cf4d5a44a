// The fuzzers' seeds are valid files of their kind, so fuzzing starts from inputs a loader accepts
// and mutates towards its edges (a seed every loader refuses would only exercise the first check).
#include <gtest/gtest.h>

#include <string>

#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/data/cache_manifest.h"
#include "emovlm/data/instruction_format.h"
#include "emovlm/text/tokenizer.h"
#include "test_util.h"

using namespace emovlm;

namespace {

// Seed NAME of the loaders corpus without its first (loader-selecting) byte, written to DIR.
std::string seed_file(const test::TempDir& dir, const std::string& name, char loader) {
  const std::string bytes =
      read_file(std::string(EMOVLM_TEST_DATA_DIR) + "/../fuzz/corpus/loaders/" + name);
  EXPECT_FALSE(bytes.empty()) << name;
  EXPECT_EQ(bytes.at(0), loader) << name << " is not a seed for loader " << int(loader);
  const std::string path = dir / name;
  write_file_atomic(path, bytes.substr(1));
  return path;
}

}  // namespace

TEST(FuzzCorpus, LoaderSeedsAreAccepted) {
  test::TempDir dir;
  EXPECT_EQ(SafeTensorsFile::open(seed_file(dir, "safetensors_two", 0))->tensors().size(), 2u);
  EXPECT_TRUE(SafeTensorsFile::open(seed_file(dir, "safetensors_empty", 0))->tensors().empty());
  const Tokenizer tok = Tokenizer::from_file(seed_file(dir, "tokenizer_small", 1));
  EXPECT_FALSE(tok.encode("Hello, world!").empty());
  const std::vector<InstructionExample> inst =
      read_instructions(seed_file(dir, "instructions_small", 5));
  ASSERT_EQ(inst.size(), 3u);
  EXPECT_EQ(inst[1].kind, "observation");
  const std::string cache = seed_file(dir, "cache_manifest_small", 6);
  const CacheManifest m = CacheManifest::parse(read_json_file(cache), cache);
  EXPECT_EQ(m.entries.size(), 3u);
  EXPECT_EQ(m.shards.size(), 2u);
}
