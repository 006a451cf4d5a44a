// libFuzzer harness for the loaders that read files users download or copy around: a safetensors
// file, a tokenizer.json, a Qwen2-VL config.json, an image (JPEG, PNG, GIF, BMP, WebP), a
// dataset manifest (JSONL), a stage-1 instruction file (JSONL) and a feature cache's manifest.json.
// The first byte picks the loader, the rest is the file. A loader may refuse its input only with
// emovlm::Error (one line naming the file); any other exception escapes and libFuzzer reports it,
// as it does crashes, leaks and UB.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/data/cache_manifest.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/instruction_format.h"
#include "emovlm/image/image.h"
#include "emovlm/models/qwen2vl_config.h"
#include "emovlm/text/tokenizer.h"

namespace {

// The loaders read paths (safetensors maps its file), so each input goes through one scratch file.
struct Scratch {
  std::string path = "/tmp/emovlm-fuzz-loaders-" + std::to_string(getpid());
  ~Scratch() { std::remove(path.c_str()); }
};

const std::string& scratch_path() {
  static const Scratch scratch;
  return scratch.path;
}

void write_scratch(const uint8_t* data, size_t size) {
  FILE* f = std::fopen(scratch_path().c_str(), "wb");
  if (!f) __builtin_trap();
  if (size && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
}

void load(uint8_t which, const uint8_t* data, size_t size) {
  const std::string& path = scratch_path();
  switch (which % 7) {
    case 0: {
      auto file = emovlm::SafeTensorsFile::open(path);
      for (const auto& t : file->tensors()) (void)t.nbytes;
      break;
    }
    case 1: {
      auto tok = emovlm::Tokenizer::from_file(path);
      (void)tok.encode("Hello, world! 123 \xE2\x9C\xA8 <|im_start|>user");
      break;
    }
    case 2:
      (void)emovlm::Qwen2VLConfig::from_json(emovlm::read_json_file(path), path);
      break;
    case 3: {
      emovlm::DecodeOptions options;
      options.max_pixels = int64_t{1} << 22;  // the fuzzer's memory limit, not the product's
      (void)emovlm::decode_image_memory(data, size, "fuzz-image", options);
      break;
    }
    case 4:
      (void)emovlm::load_dataset(path);
      break;
    case 5:
      (void)emovlm::read_instructions(path);
      break;
    case 6: {
      const emovlm::CacheManifest m =
          emovlm::CacheManifest::parse(emovlm::read_json_file(path), path);
      for (size_t k = 0; k < m.entries.size(); ++k) (void)m.entry_path(k, path);
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  write_scratch(data + 1, size - 1);
  try {
    load(data[0], data + 1, size - 1);
  } catch (const emovlm::Error&) {
    // refused with a message: what a loader is for
  }
  return 0;
}
