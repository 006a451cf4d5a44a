// The /v1 endpoint through the official OpenAI client (npm `openai`) as a real client: models,
// chat completions with image_url data URLs, streamed and not (the same text as `emovlm chat`),
// seeds, stop strings, max_tokens, errors in OpenAI's shape and the API key; and stage 0
// (`emovlm instruct make --endpoint`) against the project's own server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { env, startServer } from './server.mjs';

const data = env('EMOVLM_TEST_DATA');
const qwen = path.join(data, 'reference/qwen2vl_tiny');
const image = path.join(data, 'reference/images/img_a.png');
const dataUrl = `data:image/png;base64,${fs.readFileSync(image).toString('base64')}`;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emovlm-openai-'));
const keyFile = path.join(tmp, 'key');
fs.writeFileSync(keyFile, 'sesame-1234\n');

let server;
let client;
const MODEL = 'qwen2vl_tiny';

before(async () => {
  server = await startServer(['--vlm', qwen, '--dtype', 'f32', '--max-tokens', '24', '--api-key-file', keyFile]);
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'sesame-1234', maxRetries: 0, timeout: 120000 });
});

after(async () => {
  if (server) assert.equal(await server.stop(), 0, 'the server did not exit cleanly on SIGTERM');
  fs.rmSync(tmp, { recursive: true, force: true });
});

const describe = (extra = {}) => ({
  model: MODEL,
  messages: [{ role: 'user', content: [{ type: 'text', text: 'Describe this image.' }, { type: 'image_url', image_url: { url: dataUrl } }] }],
  ...extra,
});

async function streamed(params) {
  const chunks = [];
  for await (const c of await client.chat.completions.create({ ...params, stream: true })) chunks.push(c);
  return chunks;
}

test('models lists the served VLM', async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [MODEL]);
  assert.equal((await client.models.retrieve(MODEL)).id, MODEL);
});

test('a greedy completion is what `emovlm chat` answers, streamed or not', async () => {
  const r = await client.chat.completions.create(describe({ temperature: 0, max_tokens: 12 }));
  const text = r.choices[0].message.content;
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, MODEL);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 10);
  assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 12);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  const cli = execFileSync(env('EMOVLM_CLI'), ['chat', '--vlm', qwen, '--dtype', 'f32', '--device', 'cpu', '--image', image,
                                               '--prompt', 'Describe this image.', '--max-new-tokens', '12'], { encoding: 'utf8' });
  assert.equal(text, cli.replace(/\n$/, ''));

  const chunks = await streamed(describe({ temperature: 0, max_tokens: 12, stream_options: { include_usage: true } }));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''), text);
  const last = chunks.filter((c) => c.choices.length).at(-1);
  assert.equal(last.choices[0].finish_reason, r.choices[0].finish_reason);
  assert.deepEqual(chunks.at(-1).usage, r.usage);
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id));
});

test('a seed makes sampling reproducible', async () => {
  const ask = (seed) => client.chat.completions.create(describe({ temperature: 1.0, top_p: 0.95, seed, max_tokens: 16 }));
  const a = await ask(1234);
  const b = await ask(1234);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  const s = (await streamed(describe({ temperature: 1.0, top_p: 0.95, seed: 1234, max_tokens: 16 })))
    .map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(s, a.choices[0].message.content);
});

test('stop ends the answer before the stop string; max_tokens caps it', async () => {
  const full = (await client.chat.completions.create(describe({ temperature: 0, max_tokens: 24 }))).choices[0].message.content;
  // a stop string from the middle of the greedy answer, at its first occurrence
  let at = -1;
  let stop = '';
  for (let k = Math.floor(full.length / 3); k + 2 < full.length; ++k) {
    const s = full.slice(k, k + 2);
    if (full.indexOf(s) === k) {
      at = k;
      stop = s;
      break;
    }
  }
  assert.ok(at > 0, `no usable stop string in ${JSON.stringify(full)}`);
  const r = await client.chat.completions.create(describe({ temperature: 0, max_tokens: 24, stop: [stop, '\u0000never'] }));
  assert.equal(r.choices[0].message.content, full.slice(0, at));
  assert.equal(r.choices[0].finish_reason, 'stop');
  const s = await streamed(describe({ temperature: 0, max_tokens: 24, stop }));
  assert.equal(s.map((c) => c.choices[0]?.delta?.content ?? '').join(''), full.slice(0, at));
  assert.equal(s.at(-1).choices[0].finish_reason, 'stop');

  const short = await client.chat.completions.create(describe({ temperature: 0, max_tokens: 3 }));
  assert.ok(short.usage.completion_tokens <= 3);
  if (short.usage.completion_tokens === 3) assert.equal(short.choices[0].finish_reason, 'length');
});

test('errors come in OpenAI\'s shape and the client raises them', async () => {
  const err = async (params, Type) => {
    try {
      await client.chat.completions.create(params);
    } catch (e) {
      assert.ok(e instanceof Type, `${e.constructor.name}: ${e.message}`);
      return e;
    }
    assert.fail('no error');
  };
  const hot = await err(describe({ temperature: 5 }), OpenAI.BadRequestError);
  assert.equal(hot.status, 400);
  assert.equal(hot.error.type, 'invalid_request_error');
  assert.equal(hot.error.param, 'temperature');
  const remote = await err({ model: MODEL, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] }] },
    OpenAI.BadRequestError);
  assert.match(remote.message, /only data: URLs/);
  assert.equal(remote.error.param, 'messages[0].content[0].image_url');
  const broken = await err(describe({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,aGVsbG8=' } }] }] }),
    OpenAI.BadRequestError);
  assert.match(broken.message, /messages\[0\]\.content\[0\]\.image_url: not a/);
  const none = await err(describe({ model: 'gpt-imaginary' }), OpenAI.NotFoundError);
  assert.equal(none.error.code, 'model_not_found');
  const empty = await err({ model: MODEL, messages: [] }, OpenAI.BadRequestError);
  assert.equal(empty.error.param, 'messages');
  const nobody = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'wrong', maxRetries: 0 });
  try {
    await nobody.models.list();
    assert.fail('a wrong key was accepted');
  } catch (e) {
    assert.ok(e instanceof OpenAI.AuthenticationError, e.constructor.name);
    assert.equal(e.error.code, 'invalid_api_key');
  }
});

test('stage 0 (instruct make --endpoint) talks to this server', async () => {
  const root = path.join(tmp, 'data');
  for (const [label, file] of [['amusement', 'img_a.png'], ['sadness', 'img_b.png']]) {
    fs.mkdirSync(path.join(root, 'train', label), { recursive: true });
    fs.copyFileSync(path.join(data, 'reference/images', file), path.join(root, 'train', label, file));
  }
  const out = path.join(tmp, 'instructions.jsonl');
  // every image gets an answer over HTTP; the tiny model's answers lack the two sections stage 0
  // keeps, so none is usable and the command fails naming the parser's complaint (not an HTTP or
  // protocol failure, which would name the status or the field)
  let failure;
  try {
    execFileSync(env('EMOVLM_CLI'),
      ['instruct', 'make', '--data', root, '--labels', 'amusement,sadness', '--endpoint', `${server.url}/v1`, '--model', MODEL, '--out', out,
       '--api-key-env', 'EMOVLM_TEST_KEY', '--max-retries', '0', '-q'],
      { encoding: 'utf8', stdio: 'pipe', env: { ...process.env, EMOVLM_TEST_KEY: 'sesame-1234' } });
    assert.fail('instruct make succeeded although no answer had the sections it keeps');
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    failure = e;
  }
  assert.equal(failure.status, 1, failure.stderr);
  assert.match(failure.stderr, /none of the 2 requests gave an answer/, failure.stderr);
  assert.match(failure.stderr, /img_[ab]\.png: the answer lacks the key-elements or the reasoning section/, failure.stderr);
});
