// Byte-level BPE tokenizer read from a Hugging Face tokenizer.json (the Qwen2 one: NFC
// normalizer, the Qwen2 split pattern, byte-level mapping, BPE merges, added/special tokens).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace emovlm {

class Tokenizer {
 public:
  // Reads tokenizer.json; errors name the file and the field.
  static Tokenizer from_file(const std::string& path);
  // DIR/tokenizer.json
  static Tokenizer from_dir(const std::string& dir);

  // Encodes text; added tokens (<|im_start|>, ...) written in the text become their ids.
  std::vector<int32_t> encode(const std::string& text) const;
  // Decodes ids back to UTF-8 (invalid sequences become U+FFFD, as the reference decoder).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // -1 when the token does not exist.
  int32_t token_to_id(const std::string& token) const;
  // Throws for an unknown token, naming it.
  int32_t require_id(const std::string& token) const;
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // Largest id + 1 (model vocabularies may be larger: Qwen2-VL pads its embedding).
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }

  // The pieces the Qwen2 split pattern cuts a text into (exposed for tests).
  static std::vector<std::string> pretokenize(const std::string& text);
  static std::string nfc(const std::string& text);
  // The byte-level alphabet: the printable character standing for byte b (GPT-2's mapping).
  static const std::string& byte_symbol(uint8_t b);

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
  };
  void encode_segment(const std::string& text, std::vector<int32_t>& out) const;
  void bpe(const std::string& piece, std::vector<int32_t>& out) const;

  std::string path_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int32_t> merge_rank_;  // "left right" -> rank
  std::vector<AddedToken> added_;                         // sorted longest first
  std::vector<bool> special_, is_added_;
  bool normalize_nfc_ = true;
  // Cache of BPE results per pre-tokenized piece.
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
  mutable std::shared_ptr<std::mutex> cache_mutex_ = std::make_shared<std::mutex>();
};

}  // namespace emovlm
