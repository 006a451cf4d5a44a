// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json of the Qwen2 layout (added
// tokens, NFC, the Qwen2 split pattern, byte-level BPE), giving the ids and decodings of Hugging
// Face tokenizers (the Rust library transformers uses) for every text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace emovlm {

class Tokenizer {
 public:
  // Reads tokenizer.json; errors name the file and the field (and what is not supported).
  static Tokenizer from_file(const std::string& path);
  // DIR/tokenizer.json
  static Tokenizer from_dir(const std::string& dir);

  // Encodes text as the reference does: added tokens (<|im_start|>, ...) written in the text become
  // their ids, the rest is normalized (NFC), split by the Qwen2 pattern and merged by BPE. Input
  // that is not valid UTF-8 is first made valid by replacing each maximal invalid subsequence with
  // U+FFFD (what a Python or JavaScript caller's lossy decoding hands the reference).
  std::vector<int32_t> encode(const std::string& text) const;
  // encode() of each text on `threads` threads (0: one per core); results in input order.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                 int threads = 0) const;
  // Decodes ids as the reference does: each token's bytes (a token of characters outside the
  // byte-level alphabet as its own UTF-8), then one U+FFFD per maximal invalid subsequence;
  // skip_special_tokens drops the special added tokens; ids without a token are skipped.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // -1 when the token does not exist.
  int32_t token_to_id(const std::string& token) const;
  // Throws for an unknown token, naming it.
  int32_t require_id(const std::string& token) const;
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // Largest id + 1 (model vocabularies may be larger: Qwen2-VL pads its embedding).
  int32_t vocab_size() const;

  // The pieces the Qwen2 split pattern cuts a (valid UTF-8) text into.
  static std::vector<std::string> pretokenize(const std::string& text);
  // The reference's NFC (its Unicode tables, not the newest); the text is made valid UTF-8 first.
  static std::string nfc(const std::string& text);
  // Each maximal invalid subsequence (Unicode's "maximal subpart") replaced by U+FFFD.
  static std::string to_valid_utf8(const std::string& text);
  // The byte-level alphabet: the printable character standing for byte b (GPT-2's mapping).
  static const std::string& byte_symbol(uint8_t b);

  struct Model;
  struct Cache;

 private:
  void encode_segment(const char* text, size_t size, std::vector<int32_t>& out) const;
  void bpe(const char* piece, size_t size, std::vector<int32_t>& out) const;

  std::shared_ptr<const Model> m_;  // read-only after loading: copies share it
  std::shared_ptr<Cache> cache_;    // BPE results of short pieces, bounded, shared by copies
};

}  // namespace emovlm
