// Byte-level BPE (Qwen2) as Hugging Face tokenizers computes it: added tokens, NFC with the
// reference's tables, the Qwen2 split pattern by hand, BPE merges through a priority queue.
#include "emovlm/text/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/text/unicode_tables.h"

namespace emovlm {

namespace {

// ---------------------------------------------------------------------------------------- UTF-8

void utf8_append(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// The well-formed sequence at p (n > 0 bytes left; Unicode's Table 3-7): its length, cp set. For
// an ill-formed one: 0, and `bad` = the length of its maximal subpart (the bytes that could still
// have begun a well-formed sequence, at least 1), which one U+FFFD replaces.
size_t utf8_next(const uint8_t* p, size_t n, uint32_t& cp, size_t& bad) {
  const uint8_t b = p[0];
  if (b < 0x80) {
    cp = b;
    return 1;
  }
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1, cp = b & 0x1F;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 2, cp = b & 0x0F;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3, cp = b & 0x07;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    bad = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    if (k >= n || p[k] < lo || p[k] > hi) {
      bad = k;
      return 0;
    }
    cp = (cp << 6) | (p[k] & 0x3F);
    lo = 0x80, hi = 0xBF;
  }
  return need + 1;
}

// The character at p of text known to be valid UTF-8.
inline size_t utf8_valid_next(const uint8_t* p, uint32_t& cp) {
  const uint8_t b = p[0];
  if (b < 0x80) {
    cp = b;
    return 1;
  }
  if (b < 0xE0) {
    cp = ((b & 0x1Fu) << 6) | (p[1] & 0x3Fu);
    return 2;
  }
  if (b < 0xF0) {
    cp = ((b & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    return 3;
  }
  cp = ((b & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
  return 4;
}

bool is_valid_utf8(const uint8_t* p, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    uint32_t cp;
    size_t bad;
    const size_t len = utf8_next(p + i, n - i, cp, bad);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

void append_valid_utf8(const uint8_t* p, size_t n, std::string& out) {
  size_t i = 0, copied = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    uint32_t cp;
    size_t bad;
    const size_t len = utf8_next(p + i, n - i, cp, bad);
    if (len > 0) {
      i += len;
      continue;
    }
    out.append(reinterpret_cast<const char*>(p + copied), i - copied);
    out += "\xEF\xBF\xBD";
    i += bad;
    copied = i;
  }
  out.append(reinterpret_cast<const char*>(p + copied), n - copied);
}

// ------------------------------------------------------------------ byte-level alphabet (GPT-2)

struct ByteAlphabet {
  std::string byte_to_utf8[256];
  uint32_t byte_to_cp[256];
  int16_t cp_to_byte[512];  // the alphabet's characters are below U+0200; -1 for the others
  ByteAlphabet() {
    std::fill(std::begin(cp_to_byte), std::end(cp_to_byte), int16_t{-1});
    uint32_t n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable =
          (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : 256 + n++;
      utf8_append(cp, byte_to_utf8[b]);
      byte_to_cp[b] = cp;
      cp_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}

// A token's bytes: its characters through the byte-level alphabet, or (as the reference's
// ByteLevel decoder does for a token with any character outside the alphabet) its own UTF-8.
std::string token_bytes(const std::string& token) {
  const ByteAlphabet& ab = alphabet();
  std::string out;
  const auto* p = reinterpret_cast<const uint8_t*>(token.data());
  for (size_t k = 0; k < token.size();) {
    uint32_t cp;
    size_t bad;
    const size_t len = utf8_next(p + k, token.size() - k, cp, bad);
    if (len == 0 || cp >= 512 || ab.cp_to_byte[cp] < 0) return token;
    out.push_back(static_cast<char>(ab.cp_to_byte[cp]));
    k += len;
  }
  return out;
}

// ------------------------------------------------------------------------------------------ NFC

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kSCount = 11172;

uint8_t combining_rank(uint32_t cp) {
  const unicode::CombiningRank* b = unicode::kCombiningRanks;
  const unicode::CombiningRank* e = b + unicode::kCombiningRankCount;
  const auto* it = std::lower_bound(
      b, e, cp, [](const unicode::CombiningRank& r, uint32_t c) { return r.cp < c; });
  return it != e && it->cp == cp ? it->rank : 0;
}

const unicode::Decomposition* find_decomposition(uint32_t cp) {
  const unicode::Decomposition* b = unicode::kDecompositions;
  const unicode::Decomposition* e = b + unicode::kDecompositionCount;
  const auto* it = std::lower_bound(
      b, e, cp, [](const unicode::Decomposition& d, uint32_t c) { return d.cp < c; });
  return it != e && it->cp == cp ? it : nullptr;
}

struct CompositionMap {
  std::unordered_map<uint64_t, uint32_t> pairs;  // first << 21 | second -> composite
  CompositionMap() {
    pairs.reserve(unicode::kCompositionCount * 2);
    for (size_t i = 0; i < unicode::kCompositionCount; ++i) {
      const unicode::Composition& c = unicode::kCompositions[i];
      pairs.emplace(uint64_t{c.first} << 21 | c.second, c.composite);
    }
  }
};

bool compose(uint32_t a, uint32_t b, uint32_t& out) {
  if (a - kLBase < kLCount && b - kVBase < kVCount) {
    out = kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    return true;
  }
  if (a - kSBase < kSCount && (a - kSBase) % kTCount == 0 && b - kTBase - 1 < kTCount - 1) {
    out = a + (b - kTBase);
    return true;
  }
  static const CompositionMap map;
  auto it = map.pairs.find(uint64_t{a} << 21 | b);
  if (it == map.pairs.end()) return false;
  out = it->second;
  return true;
}

// Appends the NFC of valid UTF-8 [p, p + n) to out: decomposition, canonical ordering, composition.
void nfc_chunk(const uint8_t* p, size_t n, std::string& out) {
  thread_local std::vector<uint32_t> cps;
  thread_local std::vector<uint8_t> rank;
  cps.clear(), rank.clear();
  auto push = [&](uint32_t c) {
    cps.push_back(c);
    rank.push_back(combining_rank(c));
  };
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    i += utf8_valid_next(p + i, cp);
    if (cp - kSBase < kSCount) {
      const uint32_t s = cp - kSBase;
      push(kLBase + s / (kVCount * kTCount));
      push(kVBase + s % (kVCount * kTCount) / kTCount);
      if (s % kTCount) push(kTBase + s % kTCount);
    } else if (const unicode::Decomposition* d = find_decomposition(cp)) {
      for (uint32_t k = 0; k < d->length; ++k) push(unicode::kDecompositionData[d->offset + k]);
    } else {
      push(cp);
    }
  }
  // stable sort of each run of non-starters by rank (a starter, rank 0, never moves)
  for (size_t i = 1; i < cps.size(); ++i) {
    for (size_t j = i; j > 0 && rank[j] != 0 && rank[j - 1] > rank[j]; --j) {
      std::swap(cps[j - 1], cps[j]);
      std::swap(rank[j - 1], rank[j]);
    }
  }
  // canonical composition: each character with the last starter unless a character between them
  // has a rank as high or is a starter
  const size_t none = SIZE_MAX;
  size_t starter = rank.empty() || rank[0] != 0 ? none : 0;
  int last_rank = rank.empty() || rank[0] == 0 ? 0 : 256;
  size_t w = cps.empty() ? 0 : 1;
  for (size_t r = 1; r < cps.size(); ++r) {
    const uint32_t c = cps[r];
    const int cr = rank[r];
    uint32_t composite;
    if (starter != none && (last_rank < cr || last_rank == 0) &&
        compose(cps[starter], c, composite)) {
      cps[starter] = composite;
      continue;
    }
    if (cr == 0) starter = w;
    last_rank = cr;
    cps[w++] = c;
  }
  for (size_t k = 0; k < w; ++k) utf8_append(cps[k], out);
}

// Appends the NFC of valid UTF-8 to out. Characters NFC leaves alone whatever their like
// neighbours are copied; from the one before any other character to the next such character,
// the stretch goes through nfc_chunk (normalization never crosses such a character).
void nfc_append(const uint8_t* p, size_t n, std::string& out) {
  size_t i = 0, copied = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    uint32_t cp;
    const size_t len = utf8_valid_next(p + i, cp);
    if (unicode::nfc_quick_yes(cp)) {
      i += len;
      continue;
    }
    size_t start = i;  // the previous character: one copied as it is (or none)
    if (start > copied) {
      do --start;
      while (start > copied && (p[start] & 0xC0) == 0x80);
    }
    out.append(reinterpret_cast<const char*>(p + copied), start - copied);
    size_t end = i + len;
    while (end < n) {
      uint32_t c;
      const size_t l = utf8_valid_next(p + end, c);
      if (unicode::nfc_quick_yes(c)) break;
      end += l;
    }
    nfc_chunk(p + start, end - start, out);
    i = copied = end;
  }
  out.append(reinterpret_cast<const char*>(p + copied), n - copied);
}

// ------------------------------------------------------------------------- the split pattern

struct Char {
  uint32_t cp;
  uint32_t offset;  // byte offset in the text
  unicode::CharClass cls;
};

// Decodes valid UTF-8 into chars, with a sentinel whose offset is the text's size.
void decode_chars(const uint8_t* p, size_t n, std::vector<Char>& chars) {
  chars.clear();
  for (size_t i = 0; i < n;) {
    uint32_t cp;
    const size_t len = utf8_valid_next(p + i, cp);
    chars.push_back({cp, static_cast<uint32_t>(i), unicode::char_class(cp)});
    i += len;
  }
  chars.push_back({0, static_cast<uint32_t>(n), unicode::kOther});
}

bool in_set(uint32_t cp, const uint32_t* set, size_t n) {
  return std::find(set, set + n, cp) != set + n;
}

bool is_space(unicode::CharClass c) {
  return c == unicode::kSpace || c == unicode::kNewline;
}

// Length in characters of the Qwen2 pattern's match at i (n characters, i < n; always >= 1):
// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ with the alternatives tried in order and each
// quantifier backtracking as the regex engine does.
size_t match_at(const Char* s, size_t n, size_t i) {
  using namespace unicode;
  // 1. contractions, with the characters the case-insensitive match takes
  if (s[i].cp == '\'' && i + 1 < n) {
    const uint32_t a = s[i + 1].cp;
    if (in_set(a, kContractionSingle, kContractionSingleCount)) return 2;
    if (i + 2 < n) {
      const uint32_t b = s[i + 2].cp;
      if ((in_set(a, kContractionReVe1, kContractionReVe1Count) &&
           in_set(b, kContractionReVe2, kContractionReVe2Count)) ||
          (in_set(a, kContractionLl1, kContractionLl1Count) &&
           in_set(b, kContractionLl2, kContractionLl2Count)))
        return 3;
    }
  }
  const CharClass c0 = s[i].cls;
  // 2. [^\r\n\p{L}\p{N}]?\p{L}+
  {
    size_t j = i;
    if (c0 != kNewline && c0 != kLetter && c0 != kNumber && j + 1 < n && s[j + 1].cls == kLetter)
      ++j;
    if (s[j].cls == kLetter) {
      while (j < n && s[j].cls == kLetter) ++j;
      return j - i;
    }
  }
  // 3. \p{N}
  if (c0 == kNumber) return 1;
  // 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  {
    size_t j = i;
    if (s[j].cp == ' ') ++j;
    if (j < n && s[j].cls == kOther) {
      while (j < n && s[j].cls == kOther) ++j;
      while (j < n && s[j].cls == kNewline) ++j;
      return j - i;
    }
  }
  // the whitespace run [i, e)
  size_t e = i;
  while (e < n && is_space(s[e].cls)) ++e;
  // 5. \s*[\r\n]+ : up to the last newline of the run
  for (size_t k = e; k > i; --k)
    if (s[k - 1].cls == kNewline) return k - i;
  // 6. \s+(?!\S) : the run, less its last character when a non-space follows
  if (e == n) return e - i;
  if (e - i >= 2) return e - 1 - i;
  // 7. \s+
  return std::max<size_t>(e - i, 1);
}

// ------------------------------------------------------------------------------- merge table

// (left id, right id) -> rank, open addressing, one 64-bit word a slot (left 21 bits, right 21
// bits, rank 22 bits), so that the table (2 MB for Qwen2's 151,387 merges) stays in cache.
class MergeTable {
 public:
  static constexpr int32_t kMaxId = (1 << 21) - 2, kMaxRank = (1 << 22) - 1;
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n + n / 2) cap <<= 1;  // at most 2/3 full
    slots_.assign(cap, kEmpty);
    mask_ = cap - 1;
    shift_ = 64 - __builtin_ctzll(cap);
  }
  // A later merge of the same pair replaces the earlier (as the reference's map does).
  void put(int32_t a, int32_t b, int32_t rank) {
    const uint64_t pair = pack(a, b);
    for (size_t i = hash(pair);; i = (i + 1) & mask_) {
      if (slots_[i] == kEmpty || slots_[i] >> 22 == pair) {
        slots_[i] = pair << 22 | uint64_t(rank);
        return;
      }
    }
  }
  // The rank of the merge of (a, b), -1 when there is none.
  int32_t find(int32_t a, int32_t b) const {
    const uint64_t pair = pack(a, b);
    for (size_t i = hash(pair);; i = (i + 1) & mask_) {
      const uint64_t s = slots_[i];
      if (s >> 22 == pair) return static_cast<int32_t>(s & kMaxRank);
      if (s == kEmpty) return -1;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 21 | uint32_t(b); }
  size_t hash(uint64_t pair) const {
    return static_cast<size_t>((pair * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  std::vector<uint64_t> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
};

// Min-queue of (rank, position) as one 64-bit key each: a 4-ary heap (shallower than a binary
// one, and a node's children share a cache line), so that long pieces stay close to linear.
class MergeQueue {
 public:
  void clear() { v_.clear(); }
  bool empty() const { return v_.empty(); }
  void add(int32_t rank, int32_t pos) { v_.push_back(key(rank, pos)); }  // then heapify()
  void heapify() {
    if (v_.size() > 1)
      for (size_t i = (v_.size() - 2) / 4 + 1; i-- > 0;) sift_down(i, v_[i]);
  }
  void push(int32_t rank, int32_t pos) {
    const uint64_t k = key(rank, pos);
    size_t i = v_.size();
    v_.push_back(k);
    while (i > 0) {
      const size_t parent = (i - 1) / 4;
      if (v_[parent] <= k) break;
      v_[i] = v_[parent];
      i = parent;
    }
    v_[i] = k;
  }
  void pop(int32_t& rank, int32_t& pos) {
    const uint64_t top = v_[0];
    const uint64_t last = v_.back();
    v_.pop_back();
    if (!v_.empty()) sift_down(0, last);
    rank = static_cast<int32_t>(top >> 32), pos = static_cast<int32_t>(top & 0xFFFFFFFFu);
  }

 private:
  static uint64_t key(int32_t rank, int32_t pos) {
    return uint64_t(uint32_t(rank)) << 32 | uint32_t(pos);
  }
  void sift_down(size_t i, uint64_t k) {
    const size_t n = v_.size();
    while (true) {
      const size_t c = 4 * i + 1;
      if (c >= n) break;
      size_t best = c;
      if (c + 4 <= n) {  // all four children: a branch-free tournament
        const size_t a = v_[c + 1] < v_[c] ? c + 1 : c;
        const size_t b = v_[c + 3] < v_[c + 2] ? c + 3 : c + 2;
        best = v_[b] < v_[a] ? b : a;
      } else {
        for (size_t j = c + 1; j < n; ++j) best = v_[j] < v_[best] ? j : best;
      }
      if (v_[best] >= k) break;
      v_[i] = v_[best];
      i = best;
    }
    v_[i] = k;
  }
  std::vector<uint64_t> v_;
};

const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace

// --------------------------------------------------------------------------- model and cache

struct Tokenizer::Model {
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
  };
  std::string path;
  std::unordered_map<std::string_view, int32_t>
      vocab;                             // model vocabulary: token (a view of id_to_token) -> id
  std::vector<std::string> id_to_token;  // "" where no token has the id
  std::vector<std::string> id_bytes;     // what decode() writes for each id
  std::vector<uint8_t> has_token, special;
  std::vector<AddedToken> added;  // longest first
  bool added_first_byte[256] = {};
  int32_t byte_id[256] = {};
  MergeTable merges;
  std::vector<int32_t> merge_id;  // rank -> the merged token's id
  bool normalize_nfc = false;
  bool ignore_merges = false;
  std::unordered_map<std::string, int32_t> vocab_by_bytes;  // with ignore_merges: raw bytes -> id
};

// BPE results of pieces of up to kMaxPiece bytes (and kMaxIds ids): a fixed table of slots in
// locked shards, each piece in the one slot its hash picks, replacing what was there. Bounded
// (3.4 MB), nothing allocated after construction.
struct Tokenizer::Cache {
  static constexpr size_t kMaxPiece = 32, kMaxIds = 15, kShards = 64, kSlotsPerShard = 512;
  struct Slot {
    uint64_t hash = 0;
    uint8_t size = 0, count = 0;  // size 0: empty (pieces of one byte never come here)
    char piece[kMaxPiece];
    int32_t ids[kMaxIds];
  };
  struct Shard {
    std::mutex mu;
    Slot slots[kSlotsPerShard];
  };
  std::unique_ptr<Shard[]> shards{new Shard[kShards]};

  Slot& slot_of(Shard& s, uint64_t hash) { return s.slots[(hash / kShards) % kSlotsPerShard]; }
  bool get(std::string_view piece, uint64_t hash, std::vector<int32_t>& out) {
    Shard& s = shards[hash % kShards];
    std::lock_guard<std::mutex> lock(s.mu);
    const Slot& e = slot_of(s, hash);
    if (e.hash != hash || e.size != piece.size() ||
        std::memcmp(e.piece, piece.data(), piece.size()) != 0)
      return false;
    out.insert(out.end(), e.ids, e.ids + e.count);
    return true;
  }
  void put(std::string_view piece, uint64_t hash, const int32_t* ids, size_t count) {
    if (count > kMaxIds) return;
    Shard& s = shards[hash % kShards];
    std::lock_guard<std::mutex> lock(s.mu);
    Slot& e = slot_of(s, hash);
    e.hash = hash;
    e.size = static_cast<uint8_t>(piece.size());
    e.count = static_cast<uint8_t>(count);
    std::memcpy(e.piece, piece.data(), piece.size());
    std::memcpy(e.ids, ids, count * sizeof(int32_t));
  }
};

// ------------------------------------------------------------------------------------ loading

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  return from_file((std::filesystem::path(dir) / "tokenizer.json").string());
}

namespace {

// tokenizer.json with model.vocab and model.merges taken out as they stream by, so that the 151k
// entries of each are never put in the DOM (most of the time of loading a large vocabulary).
struct TokenizerJson {
  json doc;                                            // the rest
  std::vector<std::pair<std::string, int64_t>> vocab;  // in file order
  std::vector<std::pair<std::string, std::string>> merges;
  std::string error;  // the first entry of either that is malformed
};

TokenizerJson read_tokenizer_json(const std::string& path) {
  const std::string text = read_file(path);
  TokenizerJson t;
  std::vector<std::string> keys(4);  // the key being read at each depth up to 3
  std::string key;
  std::vector<std::string> parts;  // of a merge written as [a, b]
  auto in = [&](const char* field) { return keys[1] == "model" && keys[2] == field; };
  using E = json::parse_event_t;
  try {
    t.doc = json::parse(text, [&](int depth, E event, json& v) {
      if (event == E::key && depth <= 3) keys[depth] = v.get<std::string>();
      if (depth == 3 && in("vocab")) {
        if (event == E::key) {
          key = std::move(v.get_ref<std::string&>());
        } else if (event == E::value) {
          if (v.is_number_integer())
            t.vocab.emplace_back(std::move(key), v.get<int64_t>());
          else if (t.error.empty())
            t.error = cat("model.vocab['", key, "'] is not a token id");
        }
        return false;
      }
      if (depth >= 3 && in("merges")) {
        if (depth == 3 && event == E::value) {
          const size_t sp = v.is_string() ? v.get_ref<std::string&>().find(' ') : std::string::npos;
          if (sp != std::string::npos) {
            const std::string& m = v.get_ref<std::string&>();
            t.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
          } else if (t.error.empty()) {
            t.error = cat("model.merges entry ", t.merges.size(), " is neither \"a b\" nor [a, b]");
          }
          return false;
        }
        if (depth == 3 && event == E::array_start) return parts.clear(), true;
        if (depth == 4 && event == E::value) {
          if (v.is_string())
            parts.push_back(std::move(v.get_ref<std::string&>()));
          else
            parts.push_back({}), parts.push_back({}),
                parts.push_back({});  // malformed: too many parts
          return false;
        }
        if (depth == 3 && event == E::array_end) {
          if (parts.size() == 2)
            t.merges.emplace_back(std::move(parts[0]), std::move(parts[1]));
          else if (t.error.empty())
            t.error = cat("model.merges entry ", t.merges.size(), " is neither \"a b\" nor [a, b]");
          return false;
        }
        if (depth >= 4) return false;  // deeper than a merge
      }
      return true;
    });
  } catch (const json::exception& e) {
    throw Error(cat(path, ": invalid JSON: ", e.what()));
  }
  return t;
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path) {
  TokenizerJson file = read_tokenizer_json(path);
  const json& j = file.doc;
  auto m = std::make_shared<Model>();
  m->path = path;
  auto fail = [&](const std::string& what) { return Error(cat(path, ": ", what)); };
  auto is_null = [](const json& o, const char* k) { return !o.contains(k) || o[k].is_null(); };

  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    throw fail("missing 'model' object");
  const json& model = j["model"];
  const std::string type = json_optional<std::string>(model, "type", "BPE", path + ": model");
  if (type != "BPE") throw fail(cat("model type '", type, "' is not supported (BPE only)"));
  if (!model.contains("vocab") || !model["vocab"].is_object()) throw fail("model.vocab missing");
  if (!file.error.empty()) throw fail(file.error);
  if (!is_null(model, "dropout"))
    throw fail("model.dropout is not supported (BPE without dropout only)");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!is_null(model, k) && model[k] != "")
      throw fail(cat("model.", k, " is not supported (byte-level BPE has none)"));
  m->ignore_merges = json_optional<bool>(model, "ignore_merges", false, path + ": model");

  int64_t max_id = -1;
  for (const auto& [token, id] : file.vocab) {
    if (id < 0 || id > MergeTable::kMaxId)
      throw fail(cat("model.vocab['", token, "']: id ", id, " is out of range"));
    max_id = std::max(max_id, id);
  }
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) throw fail("added_tokens is not a list");
    for (const auto& a : j["added_tokens"]) {
      const std::string where = path + ": added_tokens";
      Model::AddedToken at{json_required<std::string>(a, "content", where),
                           json_required<int32_t>(a, "id", where),
                           json_optional<bool>(a, "special", false, where)};
      if (at.content.empty()) throw fail(cat("empty added token (id ", at.id, ")"));
      if (at.id < 0 || at.id > MergeTable::kMaxId)
        throw fail(cat("added token '", at.content, "' has id ", at.id));
      for (const char* k : {"single_word", "lstrip", "rstrip", "normalized"})
        if (json_optional<bool>(a, k, false, where))
          throw fail(cat("added token '", at.content, "': '", k, "': true is not supported"));
      max_id = std::max<int64_t>(max_id, at.id);
      m->added.push_back(at);
    }
  }
  std::stable_sort(m->added.begin(), m->added.end(),
                   [](const Model::AddedToken& a, const Model::AddedToken& b) {
                     return a.content.size() > b.content.size();
                   });
  for (const auto& a : m->added) m->added_first_byte[static_cast<uint8_t>(a.content[0])] = true;

  const size_t n = static_cast<size_t>(max_id + 1);
  m->id_to_token.assign(n, "");
  m->has_token.assign(n, 0);
  m->special.assign(n, 0);
  for (auto& [token, id] : file.vocab) {
    if (m->has_token[id]) throw fail(cat("model.vocab: id ", id, " is given to two tokens"));
    m->id_to_token[id] = std::move(token);
    m->has_token[id] = 1;
  }
  for (const auto& a : m->added) {
    if (m->has_token[a.id] && m->id_to_token[a.id] != a.content)
      throw fail(cat("added token '", a.content, "' has the id of '", m->id_to_token[a.id], "'"));
    m->id_to_token[a.id] = a.content, m->has_token[a.id] = 1, m->special[a.id] = a.special;
  }
  m->vocab.reserve(file.vocab.size());
  for (const auto& [token, id] : file.vocab)
    m->vocab.emplace(m->id_to_token[id], static_cast<int32_t>(id));
  m->id_bytes.resize(n);
  for (size_t id = 0; id < n; ++id)
    if (m->has_token[id]) m->id_bytes[id] = token_bytes(m->id_to_token[id]);
  if (m->ignore_merges)
    for (const auto& kv : m->vocab) m->vocab_by_bytes.emplace(m->id_bytes[kv.second], kv.second);

  for (int b = 0; b < 256; ++b) {
    auto it = m->vocab.find(alphabet().byte_to_utf8[b]);
    if (it == m->vocab.end())
      throw fail(cat("the vocabulary lacks byte ", b, " of the byte-level alphabet"));
    m->byte_id[b] = it->second;
  }

  if (file.merges.size() > size_t(MergeTable::kMaxRank))
    throw fail(cat("more than ", MergeTable::kMaxRank, " merges"));
  m->merges.reserve(file.merges.size());
  m->merge_id.reserve(file.merges.size());
  std::string joined;
  for (size_t rank = 0; rank < file.merges.size(); ++rank) {
    const auto& [left, right] = file.merges[rank];
    joined.assign(left).append(right);
    auto a = m->vocab.find(left), b = m->vocab.find(right), ab = m->vocab.find(joined);
    if (a == m->vocab.end() || b == m->vocab.end() || ab == m->vocab.end())
      throw fail(cat("model.merges entry ", rank, " ('", left, "', '", right,
                     "'): a token is not in model.vocab"));
    m->merges.put(a->second, b->second, static_cast<int32_t>(rank));
    m->merge_id.push_back(ab->second);
  }

  if (!is_null(j, "normalizer")) {
    const std::string nt =
        json_optional<std::string>(j["normalizer"], "type", "", path + ": normalizer");
    if (nt != "NFC") throw fail(cat("normalizer '", nt, "' is not supported (NFC or none)"));
    m->normalize_nfc = true;
  }
  // the pre-tokenizer: the Qwen2 pattern (Isolated), then byte-level without its own regex
  {
    const std::string want =
        "a Sequence of Split (the Qwen2 pattern, Isolated) and ByteLevel (no prefix space, no "
        "regex)";
    if (is_null(j, "pre_tokenizer"))
      throw fail("pre_tokenizer missing (" + want + " is supported)");
    const json& pt = j["pre_tokenizer"];
    bool ok = pt.value("type", "") == "Sequence" && pt.contains("pretokenizers") &&
              pt["pretokenizers"].is_array() && pt["pretokenizers"].size() == 2;
    if (ok) {
      const json& split = pt["pretokenizers"][0];
      const json& bl = pt["pretokenizers"][1];
      ok = split.value("type", "") == "Split" && split.contains("pattern") &&
           split["pattern"].is_object() && split["pattern"].value("Regex", "") == kQwen2Pattern &&
           split.value("behavior", "") == "Isolated" && !split.value("invert", false) &&
           bl.value("type", "") == "ByteLevel" && !bl.value("add_prefix_space", true) &&
           !bl.value("use_regex", true);
    }
    if (!ok) throw fail("pre_tokenizer is not supported (" + want + " is)");
  }
  if (is_null(j, "decoder") || j["decoder"].value("type", "") != "ByteLevel")
    throw fail("decoder is not supported (ByteLevel is)");
  if (!is_null(j, "post_processor") && j["post_processor"].value("type", "") != "ByteLevel")
    throw fail("post_processor is not supported (none or ByteLevel, which adds no tokens)");

  Tokenizer t;
  t.m_ = std::move(m);
  t.cache_ = std::make_shared<Cache>();
  return t;
}

// ----------------------------------------------------------------------------------- encoding

std::string Tokenizer::to_valid_utf8(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  append_valid_utf8(reinterpret_cast<const uint8_t*>(text.data()), text.size(), out);
  return out;
}

std::string Tokenizer::nfc(const std::string& text) {
  const std::string valid = to_valid_utf8(text);
  std::string out;
  out.reserve(valid.size());
  nfc_append(reinterpret_cast<const uint8_t*>(valid.data()), valid.size(), out);
  return out;
}

const std::string& Tokenizer::byte_symbol(uint8_t b) {
  return alphabet().byte_to_utf8[b];
}

std::vector<std::string> Tokenizer::pretokenize(const std::string& text) {
  const std::string valid = to_valid_utf8(text);
  std::vector<Char> chars;
  decode_chars(reinterpret_cast<const uint8_t*>(valid.data()), valid.size(), chars);
  const size_t n = chars.size() - 1;
  std::vector<std::string> pieces;
  for (size_t i = 0; i < n;) {
    const size_t len = match_at(chars.data(), n, i);
    pieces.push_back(valid.substr(chars[i].offset, chars[i + len].offset - chars[i].offset));
    i += len;
  }
  return pieces;
}

// The reference's word merge: a min-queue of (rank, position) over the adjacent pairs that have a
// merge; the lowest rank merges first, the leftmost among equals; entries a merge made stale are
// skipped when they come out. O(n log n) in the piece's length.
void Tokenizer::bpe(const char* piece, size_t n, std::vector<int32_t>& out) const {
  const Model& m = *m_;
  const auto* p = reinterpret_cast<const uint8_t*>(piece);
  if (n == 1) {
    out.push_back(m.byte_id[p[0]]);
    return;
  }
  if (m.ignore_merges) {
    auto it = m.vocab_by_bytes.find(std::string(piece, n));
    if (it != m.vocab_by_bytes.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const std::string_view key(piece, n);
  const bool cached = n <= Cache::kMaxPiece;
  uint64_t hash = 0;
  if (cached) {
    hash = std::hash<std::string_view>()(key);
    if (cache_->get(key, hash, out)) return;
  }

  // the symbols as a linked list; pair_rank: the rank of the merge of the pair a symbol starts (-1:
  // none)
  struct Symbol {
    int32_t id, prev, next, pair_rank;
  };
  thread_local std::vector<Symbol> sym;
  thread_local MergeQueue queue;
  sym.resize(n);
  queue.clear();
  for (size_t i = 0; i < n; ++i)
    sym[i] = {m.byte_id[p[i]], static_cast<int32_t>(i) - 1,
              i + 1 < n ? static_cast<int32_t>(i + 1) : -1, -1};
  auto pair_at = [&](int32_t pos) {  // looks the pair up; true when it has a merge
    Symbol& s = sym[pos];
    s.pair_rank = s.next >= 0 ? m.merges.find(s.id, sym[s.next].id) : -1;
    return s.pair_rank >= 0;
  };
  for (size_t i = 0; i + 1 < n; ++i)
    if (pair_at(static_cast<int32_t>(i))) queue.add(sym[i].pair_rank, static_cast<int32_t>(i));
  queue.heapify();
  while (!queue.empty()) {
    int32_t rank, pos;
    queue.pop(rank, pos);
    Symbol& left = sym[pos];
    // merged into its left neighbour, or its pair changed since this entry was queued
    if (left.id < 0 || left.pair_rank != rank) continue;
    Symbol& right = sym[left.next];
    left.id = m.merge_id[rank];
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = pos;
    if (left.prev >= 0 && pair_at(left.prev)) queue.push(sym[left.prev].pair_rank, left.prev);
    if (pair_at(pos)) queue.push(left.pair_rank, pos);
  }
  const size_t before = out.size();
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
  if (cached) cache_->put(key, hash, out.data() + before, out.size() - before);
}

void Tokenizer::encode_segment(const char* text, size_t size, std::vector<int32_t>& out) const {
  if (size == 0) return;
  thread_local std::string normalized;
  thread_local std::vector<Char> chars;
  const auto* p = reinterpret_cast<const uint8_t*>(text);
  if (m_->normalize_nfc) {
    normalized.clear();
    nfc_append(p, size, normalized);
    p = reinterpret_cast<const uint8_t*>(normalized.data());
    size = normalized.size();
  }
  decode_chars(p, size, chars);
  const size_t n = chars.size() - 1;
  for (size_t i = 0; i < n;) {
    const size_t len = match_at(chars.data(), n, i);
    const uint32_t begin = chars[i].offset, end = chars[i + len].offset;
    bpe(reinterpret_cast<const char*>(p) + begin, end - begin, out);
    i += len;
  }
}

std::vector<int32_t> Tokenizer::encode(const std::string& input) const {
  const Model& m = *m_;
  std::string fixed;
  const std::string* text = &input;
  if (!is_valid_utf8(reinterpret_cast<const uint8_t*>(input.data()), input.size())) {
    fixed = to_valid_utf8(input);
    text = &fixed;
  }
  std::vector<int32_t> out;
  out.reserve(text->size() / 3 + 8);
  const char* s = text->data();
  const size_t n = text->size();
  size_t start = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!m.added_first_byte[static_cast<uint8_t>(s[i])]) continue;
    for (const auto& a : m.added) {  // longest first: the leftmost-longest match
      if (a.content.size() <= n - i &&
          std::memcmp(s + i, a.content.data(), a.content.size()) == 0) {
        encode_segment(s + start, i - start, out);
        out.push_back(a.id);
        i += a.content.size() - 1;
        start = i + 1;
        break;
      }
    }
  }
  encode_segment(s + start, n - start, out);
  return out;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          int threads) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  size_t workers = threads > 0 ? static_cast<size_t>(threads)
                               : std::max(1u, std::thread::hardware_concurrency());
  workers = std::min(workers, texts.size());
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < texts.size();) {
      try {
        out[i] = encode(texts[i]);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t k = 1; k < workers; ++k) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

// ----------------------------------------------------------------------------------- decoding

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Model& m = *m_;
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size() || !m.has_token[id]) continue;
    if (skip_special_tokens && m.special[id]) continue;
    bytes += m.id_bytes[id];
  }
  return to_valid_utf8(bytes);
}

int32_t Tokenizer::token_to_id(const std::string& token) const {
  for (const auto& a : m_->added)
    if (a.content == token) return a.id;
  auto it = m_->vocab.find(token);
  return it == m_->vocab.end() ? -1 : it->second;
}

int32_t Tokenizer::require_id(const std::string& token) const {
  const int32_t id = token_to_id(token);
  if (id < 0) throw Error(cat(m_->path, ": the tokenizer has no token '", token, "'"));
  return id;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error(cat(m_->path, ": token id ", id, " is outside the vocabulary"));
  return m_->id_to_token[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && m_->special[id];
}

int32_t Tokenizer::vocab_size() const {
  return static_cast<int32_t>(m_->id_to_token.size());
}

}  // namespace emovlm
