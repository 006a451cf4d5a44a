// Tokenizer throughput on English text, one core (target: at least 1 MB/s).
#include <benchmark/benchmark.h>

#include <random>

#include "emovlm/text/tokenizer.h"

using namespace emovlm;

namespace {

std::string english_text(size_t bytes) {
  const char* words[] = {"the", "image", "shows", "a", "golden", "retriever", "lying", "on", "green", "grass",
                         "under", "soft", "light", "which", "conveys", "calm", "and", "contentment", "people",
                         "holding", "tools", "dark", "sky", "dramatic", "background", "emotion", "awe", "fear",
                         "excitement", "children", "laughing", "at", "it's", "they've", "2024", "3.14"};
  std::mt19937 rng(1);
  std::string s;
  while (s.size() < bytes) {
    s += words[rng() % (sizeof words / sizeof *words)];
    int r = rng() % 20;
    s += r == 0 ? ". " : r == 1 ? ", " : r == 2 ? "\n" : " ";
  }
  return s;
}

void BM_TokenizerEncodeEnglish(benchmark::State& state) {
  Tokenizer tok = Tokenizer::from_dir(EMOVLM_BENCH_TOKENIZER_DIR);
  const std::string text = english_text(1 << 20);
  for (auto _ : state) {
    auto ids = tok.encode(text);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

}  // namespace

BENCHMARK(BM_TokenizerEncodeEnglish)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
