// The reference tokenizer's speed (Hugging Face tokenizers, Rust, through its Node binding) on the
// documents `bench_text --write DIR` wrote, one encode call at a time (one thread), in bench_text's layout.
//   node bench/tokenizer_reference.js TOKENIZER_JSON DIR [REPS]
// (the binding: cd tests/data/tokenizer && npm ci)
'use strict';
const fs = require('fs');
const path = require('path');
const {tokenizers} = require(path.join(__dirname, '..', 'tests', 'data', 'tokenizer', 'reference.js'));

const [tokenizerPath, dir, repsArg] = process.argv.slice(2);
if (!tokenizerPath || !dir) {
  console.error('usage: node bench/tokenizer_reference.js TOKENIZER_JSON DIR [REPS]');
  process.exit(2);
}
const reps = Number(repsArg || 5);
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const now = () => Number(process.hrtime.bigint()) / 1e9;

function fnv1a64(ids) {
  const P = 0x100000001b3n, M = (1n << 64n) - 1n;
  let h = 0xcbf29ce484222325n;
  for (const id of ids) h = ((h ^ BigInt(id)) * P) & M;
  return h.toString(16).padStart(16, '0');
}

async function main() {
  let tok = tokenizers.Tokenizer.fromFile(tokenizerPath);
  const loads = [];
  for (let i = 0; i < 3; ++i) {
    const t0 = now();
    tok = tokenizers.Tokenizer.fromFile(tokenizerPath);
    loads.push(now() - t0);
  }
  console.log(`reference (Hugging Face tokenizers, Node binding), one call at a time: ${tokenizerPath}`);
  console.log(`load tokenizer.json: ${median(loads).toFixed(3)} s (median of 3)`);
  console.log(`${'text'.padEnd(42)} ${'docs'.padStart(5)} ${'bytes'.padStart(10)} ${'s per doc'.padStart(11)} ` +
              `${'MB/s'.padStart(8)}  ids (count, hash)`);
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  for (const {name, file} of manifest) {
    const docs = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
    const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, 'utf8'), 0);
    const encodeAll = async () => {
      const ids = [];
      for (const d of docs) for (const id of (await tok.encode(d, null, {addSpecialTokens: false})).getIds()) ids.push(id);
      return ids;
    };
    let ids = await encodeAll();  // warm-up: the reference caches the pieces it has seen
    const times = [];
    for (let i = 0; i < reps; ++i) {
      const t0 = now();
      ids = await encodeAll();
      times.push(now() - t0);
    }
    const s = median(times);
    console.log(`${name.padEnd(42)} ${String(docs.length).padStart(5)} ${String(bytes).padStart(10)} ` +
                `${(s / docs.length).toFixed(7).padStart(11)} ${(bytes / s / 1e6).toFixed(2).padStart(8)}  ` +
                `${ids.length} ${fnv1a64(ids)}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
