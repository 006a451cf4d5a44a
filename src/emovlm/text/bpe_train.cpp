// Byte-level BPE training.
#include "emovlm/text/bpe_train.h"

#include <map>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/text/tokenizer.h"

namespace emovlm {

const std::vector<std::string>& qwen2vl_special_tokens() {
  static const std::vector<std::string> s = {
      "<|endoftext|>",      "<|im_start|>",     "<|im_end|>",     "<|object_ref_start|>",
      "<|object_ref_end|>", "<|box_start|>",    "<|box_end|>",    "<|quad_start|>",
      "<|quad_end|>",       "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
      "<|image_pad|>",      "<|video_pad|>"};
  return s;
}

void train_bpe_tokenizer(const std::vector<std::string>& texts, int vocab_size,
                         const std::string& out_path) {
  if (vocab_size < 256)
    throw Error(cat("BPE vocabulary of ", vocab_size, " is smaller than the 256-byte alphabet"));
  // word (as symbols) -> count
  std::map<std::string, int64_t> word_count;
  for (const auto& t : texts)
    for (const auto& piece : Tokenizer::pretokenize(Tokenizer::nfc(t))) word_count[piece]++;
  std::vector<std::vector<std::string>> words;
  std::vector<int64_t> counts;
  for (const auto& [w, c] : word_count) {
    std::vector<std::string> sym;
    for (unsigned char b : w) sym.push_back(Tokenizer::byte_symbol(b));
    words.push_back(std::move(sym));
    counts.push_back(c);
  }
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  for (int b = 0; b < 256; ++b) vocab[Tokenizer::byte_symbol(static_cast<uint8_t>(b))] = id++;
  nlohmann::json merges = nlohmann::json::array();
  while (id < vocab_size) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;
    for (size_t w = 0; w < words.size(); ++w)
      for (size_t i = 0; i + 1 < words[w].size(); ++i)
        pairs[{words[w][i], words[w][i + 1]}] += counts[w];
    std::pair<std::string, std::string> best;
    int64_t best_n = 1;
    for (const auto& [p, n] : pairs)
      if (n > best_n) best = p, best_n = n;  // std::map order: ties keep the smallest pair
    if (best_n < 2) break;
    const std::string merged = best.first + best.second;
    if (vocab.contains(merged)) {
      // already a token (from another split): merge it in the words without a new id
    } else {
      vocab[merged] = id++;
    }
    merges.push_back({best.first, best.second});
    for (auto& w : words) {
      std::vector<std::string> next;
      for (size_t i = 0; i < w.size();) {
        if (i + 1 < w.size() && w[i] == best.first && w[i + 1] == best.second)
          next.push_back(merged), i += 2;
        else
          next.push_back(w[i]), i += 1;
      }
      w.swap(next);
    }
  }
  nlohmann::json added = nlohmann::json::array();
  for (const auto& s : qwen2vl_special_tokens())
    added.push_back({{"id", id++},
                     {"content", s},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const std::string pattern =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  nlohmann::json tok = {{"version", "1.0"},
                        {"truncation", nullptr},
                        {"padding", nullptr},
                        {"added_tokens", added},
                        {"normalizer", {{"type", "NFC"}}},
                        {"pre_tokenizer",
                         {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "Split"},
                             {"pattern", {{"Regex", pattern}}},
                             {"behavior", "Isolated"},
                             {"invert", false}},
                            {{"type", "ByteLevel"},
                             {"add_prefix_space", false},
                             {"trim_offsets", true},
                             {"use_regex", false}}}}}},
                        {"post_processor", nullptr},
                        {"decoder",
                         {{"type", "ByteLevel"},
                          {"add_prefix_space", true},
                          {"trim_offsets", true},
                          {"use_regex", true}}},
                        {"model",
                         {{"type", "BPE"},
                          {"dropout", nullptr},
                          {"unk_token", nullptr},
                          {"continuing_subword_prefix", nullptr},
                          {"end_of_word_suffix", nullptr},
                          {"fuse_unk", false},
                          {"byte_fallback", false},
                          {"ignore_merges", false},
                          {"vocab", vocab},
                          {"merges", merges}}}};
  write_file_atomic(out_path, tok.dump() + "\n");
}

}  // namespace emovlm
