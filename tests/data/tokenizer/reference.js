// The reference tokenizer (Hugging Face tokenizers, Rust, through its Node binding) and the
// Qwen2 split pattern, shared by the fixture, table and timing scripts.
'use strict';
const path = require('path');

const tokenizers = require(path.join(__dirname, 'node_modules', '@anush008', 'tokenizers'));

const QWEN2_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// The reference's Split pre-tokenizer with the Qwen2 pattern alone (no byte-level mapping), so
// that its pieces are the text's own characters.
function splitPreTokenizer() {
  const j = {
    version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null,
    pre_tokenizer: {type: 'Split', pattern: {Regex: QWEN2_PATTERN}, behavior: 'Isolated', invert: false},
    post_processor: null, decoder: null,
    model: {type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
            fuse_unk: false, byte_fallback: false, vocab: {a: 0}, merges: []},
  };
  return tokenizers.Tokenizer.fromString(JSON.stringify(j)).getPreTokenizer();
}

// A seeded generator (mulberry32): the same sequence on every machine.
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (arr) => arr[Math.floor(next() * arr.length)],
  };
}

module.exports = {tokenizers, QWEN2_PATTERN, splitPreTokenizer, rng};
