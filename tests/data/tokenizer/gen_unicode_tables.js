// Writes src/emovlm/text/unicode_tables.cpp: the character data the tokenizer needs, read off the
// reference tokenizer's own behaviour code point by code point (its split pattern's classes, its
// NFC and NFD, its canonical ordering, the case-insensitive contractions), so that the C++
// tokenizer sees every character as the reference does.
//   cd tests/data/tokenizer && npm ci && node gen_unicode_tables.js
'use strict';
const fs = require('fs');
const path = require('path');
const {tokenizers, splitPreTokenizer} = require('./reference');

const OUT = path.join(__dirname, '..', '..', '..', 'src', 'emovlm', 'text', 'unicode_tables.cpp');
const MAX = 0x110000;
const isSurrogate = (c) => c >= 0xD800 && c < 0xE000;
const cps = (s) => [...s].map((x) => x.codePointAt(0));
const str = (arr) => String.fromCodePoint(...arr);
const hex = (c) => 'U+' + c.toString(16).toUpperCase().padStart(4, '0');
function fail(msg) {
  throw new Error(msg);
}

const pre = splitPreTokenizer();
const pieces = (s) => pre.preTokenizeString(s).map((p) => p[0]);
const nfdNorm = tokenizers.nfdNormalizer();
const nfcNorm = tokenizers.nfcNormalizer();
const nfd = (s) => nfdNorm.normalizeString(s);
const nfc = (s) => nfcNorm.normalizeString(s);

// ---- the split pattern's classes: \p{L}, \p{N}, \s (other than \r \n), \r \n, anything else
const OTHER = 0, LETTER = 1, NUMBER = 2, SPACE = 3, NEWLINE = 4;
const cls = new Uint8Array(MAX);
for (let c = 0; c < MAX; ++c) {
  if (isSurrogate(c)) continue;  // never in valid UTF-8: class "other"
  const ch = String.fromCodePoint(c);
  if (c === 0x0A || c === 0x0D) cls[c] = NEWLINE;                         // literal in the pattern
  else if (pieces('a' + ch).length === 1) cls[c] = LETTER;                // \p{L}+ joins it to a letter
  else if (c !== 0x20 && pieces(ch + '!').length === 1) cls[c] = OTHER;   // [^\s\p{L}\p{N}]+ joins it to '!'
  else if (pieces(ch + ch).length === 2) cls[c] = NUMBER;                 // \p{N} takes one at a time
  else cls[c] = SPACE;                                                    // \s+ joins a run
}
// cross-check each class on a second probe
for (let c = 0; c < MAX; ++c) {
  if (isSurrogate(c) || c === 0x0A || c === 0x0D) continue;
  const ch = String.fromCodePoint(c);
  const p = pieces('1' + ch + ch);
  const want = cls[c] === LETTER ? 2 : cls[c] === NUMBER ? 3 : cls[c] === OTHER ? 2 : 2;
  if (p.length !== want) fail(`class of ${hex(c)}: '1cc' gives ${p.length} pieces`);
}

// ---- contractions (?i:'s|'t|'re|'ve|'m|'ll|'d): which characters the case-insensitive match takes
// A contraction is the first piece exactly when it stays apart from a following letter, a
// following punctuation mark and a following newline.
const isContraction = (s) => pieces(s + 'b')[0] === s && pieces(s + '!')[0] === s && pieces(s + '\n')[0] === s;
const single = [], re1 = [], re2 = [], ll1 = [], ll2 = [];
for (let c = 0; c < MAX; ++c) {
  if (isSurrogate(c)) continue;
  const ch = String.fromCodePoint(c);
  if (isContraction("'" + ch)) single.push(c);
  if (isContraction("'" + ch + 'e')) re1.push(c);
  if (isContraction("'r" + ch)) re2.push(c);
  if (isContraction("'" + ch + 'l')) ll1.push(c);
  if (isContraction("'l" + ch)) ll2.push(c);
}
for (const c of re2) if (!isContraction("'v" + String.fromCodePoint(c))) fail(`'v${hex(c)} is not a contraction`);
for (const a of re1) for (const b of re2) if (!isContraction("'" + str([a, b]))) fail(`'${hex(a)}${hex(b)}`);
for (const a of ll1) for (const b of ll2) if (!isContraction("'" + str([a, b]))) fail(`'${hex(a)}${hex(b)}`);
for (const set of [re1, ll1]) for (const c of set) if (single.includes(c)) fail(`${hex(c)} starts two contractions`);

// ---- normalization: each code point's NFD and NFC, and whether it is a non-starter
const decomp = new Map();  // c -> full canonical decomposition (not for Hangul syllables)
const nfcOf = new Map();   // c -> NFC of c alone, when it differs from c
const nonStarter = [];
const HANGUL_BASE = 0xAC00, HANGUL_COUNT = 11172;
const isHangulSyllable = (c) => c >= HANGUL_BASE && c < HANGUL_BASE + HANGUL_COUNT;
function hangulDecomposition(c) {
  const s = c - HANGUL_BASE, l = 0x1100 + Math.floor(s / 588), v = 0x1161 + Math.floor((s % 588) / 28), t = s % 28;
  return t ? [l, v, 0x11A7 + t] : [l, v];
}
for (let c = 0; c < MAX; ++c) {
  if (isSurrogate(c)) continue;
  const ch = String.fromCodePoint(c);
  const d = cps(nfd(ch)), k = cps(nfc(ch));
  if (isHangulSyllable(c)) {
    if (str(d) !== str(hangulDecomposition(c))) fail(`Hangul ${hex(c)} decomposes otherwise`);
    if (k.length !== 1 || k[0] !== c) fail(`Hangul ${hex(c)} is not NFC`);
    continue;
  }
  if (d.length !== 1 || d[0] !== c) decomp.set(c, d);
  if (k.length !== 1 || k[0] !== c) nfcOf.set(c, k);
  // U+0316 (below) moves before U+0301 (above) across c exactly when c is a non-starter
  if (d.length === 1 && d[0] === c && nfd('\u0301' + ch + '\u0316') !== '\u0301' + ch + '\u0316') nonStarter.push(c);
}
// canonical ordering: sort the non-starters by the reference's reordering of each pair
const before = (a, b) => nfd(str([b, a])) === str([a, b]);  // a sorts before b
nonStarter.sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0));
const rank = new Map();
let r = 0;
for (let i = 0; i < nonStarter.length; ++i) {
  if (i === 0 || before(nonStarter[i - 1], nonStarter[i])) ++r;
  else if (before(nonStarter[i], nonStarter[i - 1])) fail('the reordering is not a total order');
  rank.set(nonStarter[i], r);
}
for (let i = 1; i < nonStarter.length; ++i)  // the order holds between neighbours of each group and the next
  if (rank.get(nonStarter[i]) === rank.get(nonStarter[i - 1]) && (before(nonStarter[i], nonStarter[i - 1]) || before(nonStarter[i - 1], nonStarter[i])))
    fail('equal ranks that reorder');
// primary composites: c whose NFD recomposes to c; its pair is (NFC of the rest, one mark of the NFD)
const composition = [];  // [first, second, composite]
for (const [c, d] of decomp) {
  if (nfcOf.has(c)) continue;  // singletons, exclusions, non-starter decompositions
  let found = null;
  for (let i = d.length - 1; i >= 1 && !found; --i) {
    const rest = cps(nfc(str(d.filter((_, k) => k !== i))));
    if (rest.length === 1 && nfc(str([rest[0], d[i]])) === String.fromCodePoint(c)) found = [rest[0], d[i], c];
  }
  if (!found) fail(`no composition pair for ${hex(c)}`);
  if (found[0] !== d[0] && !decomp.has(found[0])) fail(`${hex(c)}: the first of its pair does not decompose`);
  composition.push(found);
}
composition.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
const second = new Set(composition.map((p) => p[1]));
for (let v = 0x1161; v <= 0x1175; ++v) second.add(v);  // Hangul L+V, LV+T (checked below)
for (let t = 0x11A8; t <= 0x11C2; ++t) second.add(t);
for (let l = 0; l < 19; ++l)
  for (let v = 0; v < 21; ++v)
    for (let t = 0; t < 28; t += 9) {
      const seq = t ? [0x1100 + l, 0x1161 + v, 0x11A7 + t] : [0x1100 + l, 0x1161 + v];
      if (cps(nfc(str(seq)))[0] !== HANGUL_BASE + (l * 21 + v) * 28 + t) fail('Hangul composition');
    }
// copied as they are when their neighbours are too: NFC alone, a starter, not combining with what
// precedes, and the same for the first character of their decomposition
const rankOf = (c) => rank.get(c) || 0;
function quickYes(c) {
  if (isSurrogate(c)) return true;
  if (nfcOf.has(c) || rankOf(c) !== 0 || second.has(c)) return false;
  const d = isHangulSyllable(c) ? hangulDecomposition(c) : decomp.get(c);
  return !d || (rankOf(d[0]) === 0 && !second.has(d[0]));
}

// ---- the C++ source: a two-level table of one byte per code point (class | quick-yes << 3)
const SHIFT = 7, BLOCK = 1 << SHIFT;
const blocks = [], blockIds = new Map(), index = [];
for (let b = 0; b < MAX / BLOCK; ++b) {
  const bytes = [];
  for (let c = b * BLOCK; c < (b + 1) * BLOCK; ++c) bytes.push(cls[c] | (quickYes(c) ? 8 : 0));
  const key = bytes.join(',');
  if (!blockIds.has(key)) {
    blockIds.set(key, blocks.length);
    blocks.push(bytes);
  }
  index.push(blockIds.get(key));
}
const decompEntries = [...decomp.entries()].sort((x, y) => x[0] - y[0]);
const decompData = [];
const decompRows = decompEntries.map(([c, d]) => {
  const row = `{0x${c.toString(16)}, ${decompData.length}, ${d.length}}`;
  decompData.push(...d);
  return row;
});
const rankRows = [...rank.entries()].sort((x, y) => x[0] - y[0]).map(([c, k]) => `{0x${c.toString(16)}, ${k}}`);
const wrap = (items, per) => {
  const lines = [];
  for (let i = 0; i < items.length; i += per) lines.push('    ' + items.slice(i, i + per).join(', ') + ',');
  return lines.join('\n');
};
const list = (arr) => arr.map((c) => '0x' + c.toString(16)).join(', ');
const counts = [0, 0, 0, 0, 0];
for (let c = 0; c < MAX; ++c) if (!isSurrogate(c)) counts[cls[c]]++;

const bindingDir = path.join(__dirname, 'node_modules', '@anush008', 'tokenizers');
const bindingVersion = require(path.join(bindingDir, 'package.json')).version;
const crateVersion = /^tokenizers\s*=\s*"([^"]+)"/m.exec(fs.readFileSync(path.join(bindingDir, 'Cargo.toml'), 'utf8'))[1];
const src = `// Generated by tests/data/tokenizer/gen_unicode_tables.js from the reference tokenizer's behaviour
// (Hugging Face tokenizers ${crateVersion}, Node binding @anush008/tokenizers ${bindingVersion}); do not edit.
// Classes of the split pattern (letters ${counts[1]}, numbers ${counts[2]}, spaces ${counts[3]}, newlines ${counts[4]}; the
// reference's regex engine knows Unicode 16.0), canonical decompositions (${decompEntries.length}), canonical ordering
// (${rank.size} non-starters in ${r} ranks) and compositions (${composition.length}) of its NFC (Unicode 9.0's tables).
#include "emovlm/text/unicode_tables.h"

namespace emovlm::unicode {

const uint16_t kPropertyIndex[${index.length}] = {
${wrap(index, 24)}
};

const uint8_t kPropertyBlocks[${blocks.length}][${BLOCK}] = {
${blocks.map((b) => '    {' + b.join(',') + '},').join('\n')}
};

const CombiningRank kCombiningRanks[${rankRows.length}] = {
${wrap(rankRows, 8)}
};
const size_t kCombiningRankCount = ${rankRows.length};

const uint32_t kDecompositionData[${decompData.length}] = {
${wrap(decompData.map((c) => '0x' + c.toString(16)), 12)}
};
const Decomposition kDecompositions[${decompRows.length}] = {
${wrap(decompRows, 6)}
};
const size_t kDecompositionCount = ${decompRows.length};

const Composition kCompositions[${composition.length}] = {
${wrap(composition.map((p) => `{0x${p[0].toString(16)}, 0x${p[1].toString(16)}, 0x${p[2].toString(16)}}`), 4)}
};
const size_t kCompositionCount = ${composition.length};

// (?i:'s|'t|'m|'d): the characters after the apostrophe; (?i:'re|'ve) and (?i:'ll): the first and second
const uint32_t kContractionSingle[${single.length}] = {${list(single)}};
const uint32_t kContractionReVe1[${re1.length}] = {${list(re1)}};
const uint32_t kContractionReVe2[${re2.length}] = {${list(re2)}};
const uint32_t kContractionLl1[${ll1.length}] = {${list(ll1)}};
const uint32_t kContractionLl2[${ll2.length}] = {${list(ll2)}};
const size_t kContractionSingleCount = ${single.length}, kContractionReVe1Count = ${re1.length},
             kContractionReVe2Count = ${re2.length}, kContractionLl1Count = ${ll1.length}, kContractionLl2Count = ${ll2.length};

}  // namespace emovlm::unicode
`;
fs.writeFileSync(OUT, src);
console.log(`${OUT}: ${blocks.length} property blocks, ${decompRows.length} decompositions, ${rank.size} non-starters ` +
            `in ${r} ranks, ${composition.length} compositions; classes`, counts,
            '; contractions', {single: single.map(hex), re1: re1.map(hex), re2: re2.map(hex), ll1: ll1.map(hex), ll2: ll2.map(hex)});
