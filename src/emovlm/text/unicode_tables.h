// Character data of the tokenizer as the reference tokenizer sees it: the classes of the Qwen2
// split pattern, NFC's decompositions, canonical ordering and compositions, the contractions'
// case-insensitive letters (generated into unicode_tables.cpp by
// tests/data/tokenizer/gen_unicode_tables.js).
#pragma once

#include <cstddef>
#include <cstdint>

namespace emovlm::unicode {

// The split pattern's classes: \p{L}, \p{N}, \s other than \r and \n, \r and \n, anything else.
enum CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3, kNewline = 4 };

// The order canonical ordering sorts non-starters by (1 = first); starters have rank 0.
struct CombiningRank {
  uint32_t cp;
  uint8_t rank;
};
// The full canonical decomposition of cp: kDecompositionData[offset, offset + length).
struct Decomposition {
  uint32_t cp;
  uint16_t offset;
  uint8_t length;
};
// first + second -> composite (primary composites; Hangul is algorithmic).
struct Composition {
  uint32_t first, second, composite;
};

extern const uint16_t kPropertyIndex[0x110000 >> 7];
extern const uint8_t kPropertyBlocks[][128];
extern const CombiningRank kCombiningRanks[];
extern const size_t kCombiningRankCount;
extern const uint32_t kDecompositionData[];
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;
extern const Composition kCompositions[];
extern const size_t kCompositionCount;
extern const uint32_t kContractionSingle[], kContractionReVe1[], kContractionReVe2[],
    kContractionLl1[], kContractionLl2[];
extern const size_t kContractionSingleCount, kContractionReVe1Count, kContractionReVe2Count,
    kContractionLl1Count, kContractionLl2Count;

// One byte per code point (cp < 0x110000): the class in bits 0-2; bit 3 set when NFC leaves the
// character as it is whatever its neighbours, provided they are such characters too (it is its
// own NFC, a starter, does not combine with what precedes it, nor does its decomposition's first).
inline uint8_t properties(uint32_t cp) {
  return kPropertyBlocks[kPropertyIndex[cp >> 7]][cp & 127];
}
inline CharClass char_class(uint32_t cp) {
  return static_cast<CharClass>(properties(cp) & 7);
}
inline bool nfc_quick_yes(uint32_t cp) {
  return (properties(cp) & 8) != 0;
}

}  // namespace emovlm::unicode
