// The reference tokenizer's speed (Hugging Face tokenizers, Rust, through its Node binding) on the
// documents `bench_text --write DIR` wrote, one encode call at a time (one thread), in bench_text's layout.
//   node bench/tokenizer_reference.js TOKENIZER_JSON DIR [REPS]
//   node bench/tokenizer_reference.js --compare OURS_1 REFERENCE_1 [OURS_2 REFERENCE_2 ...]
// (the binding: cd tests/data/tokenizer && npm ci). --compare prints both side by side from the
// outputs of several rounds: per row the median MB/s over the rounds, and whether the ids agree.
'use strict';
const fs = require('fs');
const path = require('path');
const {tokenizers} = require(path.join(__dirname, '..', 'tests', 'data', 'tokenizer', 'reference.js'));

if (process.argv[2] === '--compare') {
  compare(process.argv.slice(3));
  process.exit(0);
}
const [tokenizerPath, dir, repsArg] = process.argv.slice(2);
if (!tokenizerPath || !dir) {
  console.error('usage: node bench/tokenizer_reference.js TOKENIZER_JSON DIR [REPS]');
  process.exit(2);
}
const reps = Number(repsArg || 5);
function median(xs) {
  return xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}
// CPU seconds of the process (the binding encodes on a libuv worker thread while the main thread
// waits; the machine is shared: time spent waiting for a core is not counted).
const now = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

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
  console.log(`reference (Hugging Face tokenizers, Node binding), one call at a time, CPU time, median of ${reps} after a warm-up: ${tokenizerPath}`);
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

// rows of a bench_text or tokenizer_reference.js output: name -> {mbs, ids}, and the load time
function parseRun(file) {
  const rows = new Map();
  let load = NaN;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^load tokenizer\.json: ([0-9.]+) s/.exec(line);
    if (m) load = Number(m[1]);
    const f = line.slice(42).trim().split(/\s+/);
    if (f.length === 6 && /^[0-9a-f]{16}$/.test(f[5])) rows.set(line.slice(0, 42).trim(), {mbs: Number(f[3]), ids: f[4] + ' ' + f[5]});
  }
  return {rows, load};
}

function compare(files) {
  const ours = files.filter((_, i) => i % 2 === 0).map(parseRun), ref = files.filter((_, i) => i % 2 === 1).map(parseRun);
  const med = (xs) => median(xs.filter((x) => !Number.isNaN(x)));
  console.log(`${'text'.padEnd(42)} ${'ours MB/s'.padStart(10)} ${'reference'.padStart(10)} ${'ratio'.padStart(7)}  ids`);
  for (const name of ours[0].rows.keys()) {
    const a = med(ours.map((r) => r.rows.get(name).mbs)), b = med(ref.map((r) => r.rows.get(name).mbs));
    const same = ours.concat(ref).every((r) => r.rows.get(name).ids === ours[0].rows.get(name).ids);
    console.log(`${name.padEnd(42)} ${a.toFixed(2).padStart(10)} ${b.toFixed(2).padStart(10)} ${(a / b).toFixed(2).padStart(7)}  ` +
                (same ? 'equal' : 'DIFFER'));
  }
  const la = med(ours.map((r) => r.load)), lb = med(ref.map((r) => r.load));
  console.log(`${'load tokenizer.json (s)'.padEnd(42)} ${la.toFixed(3).padStart(10)} ${lb.toFixed(3).padStart(10)} ${(lb / la).toFixed(2).padStart(7)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
