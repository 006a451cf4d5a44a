// Byte-level BPE (Qwen2): added tokens, NFC, the Qwen2 split pattern by hand, BPE merges.
#include "emovlm/text/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <climits>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"

namespace emovlm {

namespace {

// ------------------------------------------------------------------ byte-level alphabet (GPT-2)

struct ByteAlphabet {
  std::string byte_to_utf8[256];
  std::unordered_map<int32_t, uint8_t> codepoint_to_byte;
  ByteAlphabet() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      int32_t cp = printable ? b : 256 + n++;
      uint8_t buf[4];
      auto len = utf8proc_encode_char(cp, buf);
      byte_to_utf8[b] = std::string(reinterpret_cast<char*>(buf), static_cast<size_t>(len));
      codepoint_to_byte[cp] = static_cast<uint8_t>(b);
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// ------------------------------------------------------------------------- character classes

enum CharClass : uint8_t { kOther, kLetter, kNumber, kSpace, kNewline };

bool is_white_space(int32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

CharClass classify(int32_t c) {
  if (c == '\r' || c == '\n') return kNewline;
  if (c < 0) return kOther;
  if (is_white_space(c)) return kSpace;
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: return kLetter;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO: return kNumber;
    default: return kOther;
  }
}

struct Char {
  int32_t cp;       // -1 for an invalid byte
  size_t offset;    // byte offset in the text
  CharClass cls;
};

std::vector<Char> decode_chars(const std::string& text) {
  std::vector<Char> out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    utf8proc_int32_t cp;
    auto n = utf8proc_iterate(p + i, static_cast<utf8proc_ssize_t>(text.size() - i), &cp);
    if (n <= 0) {
      out.push_back({-1, i, kOther});
      i += 1;
    } else {
      out.push_back({cp, i, classify(cp)});
      i += static_cast<size_t>(n);
    }
  }
  return out;
}

bool is_space(CharClass c) { return c == kSpace || c == kNewline; }

int32_t lower_ascii(int32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// Length (in chars) of the match of the Qwen2 pattern at position i (always >= 1):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t match_at(const std::vector<Char>& s, size_t i) {
  const size_t n = s.size();
  auto cls = [&](size_t k) { return s[k].cls; };
  // 1. contractions
  if (s[i].cp == '\'' && i + 1 < n) {
    int32_t a = lower_ascii(s[i + 1].cp);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 < n) {
      int32_t b = lower_ascii(s[i + 2].cp);
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
  }
  // 2. [^\r\n\p{L}\p{N}]?\p{L}+
  {
    size_t j = i;
    if (cls(j) != kNewline && cls(j) != kLetter && cls(j) != kNumber && j + 1 < n && cls(j + 1) == kLetter) ++j;
    if (cls(j) == kLetter) {
      while (j < n && cls(j) == kLetter) ++j;
      return j - i;
    }
  }
  // 3. \p{N}
  if (cls(i) == kNumber) return 1;
  // 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  {
    size_t j = i;
    if (s[j].cp == ' ') ++j;
    auto punct = [&](size_t k) { return cls(k) == kOther; };
    if (j < n && punct(j)) {
      while (j < n && punct(j)) ++j;
      while (j < n && cls(j) == kNewline) ++j;
      return j - i;
    }
  }
  // whitespace run [i, e)
  size_t e = i;
  while (e < n && is_space(cls(e))) ++e;
  if (e > i) {
    // 5. \s*[\r\n]+ : up to the last newline of the run
    for (size_t k = e; k > i; --k)
      if (cls(k - 1) == kNewline) return k - i;
    // 6. \s+(?!\S) : the run, less its last char when a non-space follows
    if (e == n) return e - i;
    if (e - i >= 2) return e - 1 - i;
    // 7. \s+
    return e - i;
  }
  return 1;  // unreachable for valid classes; keeps progress guaranteed
}

}  // namespace

// ------------------------------------------------------------------------------------ loading

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  return from_file((std::filesystem::path(dir) / "tokenizer.json").string());
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  json j = read_json_file(path);
  Tokenizer t;
  t.path_ = path;
  if (!j.contains("model") || !j["model"].is_object()) throw Error(cat(path, ": missing 'model' object"));
  const json& model = j["model"];
  std::string type = json_optional<std::string>(model, "type", "BPE", path + ": model");
  if (type != "BPE") throw Error(cat(path, ": model type '", type, "' is not supported (BPE only)"));
  if (!model.contains("vocab") || !model["vocab"].is_object()) throw Error(cat(path, ": model.vocab missing"));
  int32_t max_id = -1;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    int32_t id = it.value().get<int32_t>();
    t.vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
    for (const auto& a : j["added_tokens"]) {
      AddedToken at{json_required<std::string>(a, "content", path + ": added_tokens"),
                    json_required<int32_t>(a, "id", path + ": added_tokens"),
                    json_optional<bool>(a, "special", false, path + ": added_tokens")};
      if (at.content.empty()) throw Error(cat(path, ": empty added token (id ", at.id, ")"));
      max_id = std::max(max_id, at.id);
      t.added_.push_back(at);
    }
  }
  std::sort(t.added_.begin(), t.added_.end(),
            [](const AddedToken& a, const AddedToken& b) { return a.content.size() > b.content.size(); });
  t.id_to_token_.assign(static_cast<size_t>(max_id + 1), "");
  t.special_.assign(static_cast<size_t>(max_id + 1), false);
  t.is_added_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& kv : t.vocab_) t.id_to_token_[kv.second] = kv.first;
  for (const auto& a : t.added_) {
    t.id_to_token_[a.id] = a.content;
    t.special_[a.id] = a.special;
    t.is_added_[a.id] = true;
  }
  if (model.contains("merges") && model["merges"].is_array()) {
    int32_t rank = 0;
    for (const auto& m : model["merges"]) {
      std::string key;
      if (m.is_string()) {
        key = m.get<std::string>();
      } else if (m.is_array() && m.size() == 2) {
        key = m[0].get<std::string>() + " " + m[1].get<std::string>();
      } else {
        throw Error(cat(path, ": model.merges entry ", rank, " is neither \"a b\" nor [a, b]"));
      }
      t.merge_rank_.emplace(key, rank++);
    }
  }
  if (j.contains("normalizer") && j["normalizer"].is_object()) {
    std::string nt = json_optional<std::string>(j["normalizer"], "type", "", path + ": normalizer");
    if (nt != "NFC") throw Error(cat(path, ": normalizer '", nt, "' is not supported (NFC or none)"));
  } else {
    t.normalize_nfc_ = false;
  }
  for (int b = 0; b < 256; ++b)
    if (!t.vocab_.count(alphabet().byte_to_utf8[b]))
      throw Error(cat(path, ": the vocabulary lacks byte ", b, " of the byte-level alphabet"));
  return t;
}

// ----------------------------------------------------------------------------------- encoding

std::string Tokenizer::nfc(const std::string& text) {
  utf8proc_uint8_t* out = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(text.c_str()));
  if (!out) return text;  // invalid UTF-8: left as is, the byte-level model still encodes it
  std::string s(reinterpret_cast<char*>(out));
  std::free(out);
  return s;
}

const std::string& Tokenizer::byte_symbol(uint8_t b) { return alphabet().byte_to_utf8[b]; }

std::vector<std::string> Tokenizer::pretokenize(const std::string& text) {
  std::vector<Char> chars = decode_chars(text);
  std::vector<std::string> pieces;
  size_t i = 0;
  while (i < chars.size()) {
    size_t len = match_at(chars, i);
    size_t begin = chars[i].offset;
    size_t end = i + len < chars.size() ? chars[i + len].offset : text.size();
    pieces.push_back(text.substr(begin, end - begin));
    i += len;
  }
  return pieces;
}

void Tokenizer::bpe(const std::string& piece, std::vector<int32_t>& out) const {
  {
    std::lock_guard<std::mutex> lock(*cache_mutex_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const ByteAlphabet& ab = alphabet();
  std::vector<std::string> sym;
  sym.reserve(piece.size());
  for (unsigned char b : piece) sym.push_back(ab.byte_to_utf8[b]);
  std::string key;
  while (sym.size() > 1) {
    int32_t best = INT32_MAX;
    size_t best_i = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      key.assign(sym[i]).append(" ").append(sym[i + 1]);
      auto it = merge_rank_.find(key);
      if (it != merge_rank_.end() && it->second < best) best = it->second, best_i = i;
    }
    if (best == INT32_MAX) break;
    // merge every occurrence of the best pair, left to right
    const std::string left = sym[best_i], right = sym[best_i + 1];
    std::vector<std::string> next;
    next.reserve(sym.size());
    for (size_t i = 0; i < sym.size();) {
      if (i + 1 < sym.size() && sym[i] == left && sym[i + 1] == right) {
        next.push_back(left + right);
        i += 2;
      } else {
        next.push_back(sym[i]);
        i += 1;
      }
    }
    sym.swap(next);
  }
  std::vector<int32_t> ids;
  ids.reserve(sym.size());
  for (const auto& s : sym) {
    auto it = vocab_.find(s);
    if (it == vocab_.end()) throw Error(cat(path_, ": BPE produced '", s, "' which is not in the vocabulary"));
    ids.push_back(it->second);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(*cache_mutex_);
  if (cache_.size() > 200000) cache_.clear();
  cache_.emplace(piece, std::move(ids));
}

void Tokenizer::encode_segment(const std::string& text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  const std::string norm = normalize_nfc_ ? nfc(text) : text;
  for (const auto& piece : pretokenize(norm)) bpe(piece, out);
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int32_t> out;
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (const auto& a : added_) {  // longest first
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit) {
      encode_segment(text.substr(start, i - start), out);
      out.push_back(hit->id);
      i += hit->content.size();
      start = i;
    } else {
      ++i;
    }
  }
  encode_segment(text.substr(start), out);
  return out;
}

// ----------------------------------------------------------------------------------- decoding

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const ByteAlphabet& ab = alphabet();
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) throw Error(cat(path_, ": token id ", id, " is outside the vocabulary"));
    const std::string& tok = id_to_token_[id];
    if (is_added_[id]) {
      if (!(skip_special_tokens && special_[id])) bytes += tok;
      continue;
    }
    const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(tok.data());
    size_t k = 0;
    while (k < tok.size()) {
      utf8proc_int32_t cp;
      auto n = utf8proc_iterate(p + k, static_cast<utf8proc_ssize_t>(tok.size() - k), &cp);
      if (n <= 0) break;
      auto it = ab.codepoint_to_byte.find(cp);
      if (it != ab.codepoint_to_byte.end()) bytes.push_back(static_cast<char>(it->second));
      k += static_cast<size_t>(n);
    }
  }
  // invalid UTF-8 (a character cut between tokens) becomes U+FFFD
  std::string out;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(bytes.data());
  size_t k = 0;
  while (k < bytes.size()) {
    utf8proc_int32_t cp;
    auto n = utf8proc_iterate(p + k, static_cast<utf8proc_ssize_t>(bytes.size() - k), &cp);
    if (n <= 0) {
      out += "\xEF\xBF\xBD";
      k += 1;
    } else {
      out.append(bytes, k, static_cast<size_t>(n));
      k += static_cast<size_t>(n);
    }
  }
  return out;
}

int32_t Tokenizer::token_to_id(const std::string& token) const {
  for (const auto& a : added_)
    if (a.content == token) return a.id;
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

int32_t Tokenizer::require_id(const std::string& token) const {
  int32_t id = token_to_id(token);
  if (id < 0) throw Error(cat(path_, ": the tokenizer has no token '", token, "'"));
  return id;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) throw Error(cat(path_, ": token id ", id, " is outside the vocabulary"));
  return id_to_token_[id];
}

bool Tokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && special_[id]; }

}  // namespace emovlm
