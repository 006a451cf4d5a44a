// The page at / in headless Chromium (Debian's, through the DevTools protocol): images of every
// supported format come in by the keyboard-opened file picker, drag and drop, paste and the file
// input; each card must show what `emovlm predict --json` gives for that file; unreadable, non-image
// and too-large files show their errors in place. Screenshots (light and dark) go to EMOVLM_WEB_OUT.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import { env, startServer } from './server.mjs';

const data = env('EMOVLM_TEST_DATA');
const outDir = env('EMOVLM_WEB_OUT');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'emovlm-web-'));

// One file of each supported format (and two WebP kinds); the names are what the cards show.
const images = {
  jpeg: path.join(data, 'reference/images/img_c.jpg'),
  gif: path.join(data, 'formats/pillow_plain.gif'),
  bmp: path.join(data, 'formats/pillow_rgb24.bmp'),
  png: path.join(data, 'reference/images/img_b.png'),
  webp: path.join(data, 'formats/lossy.webp'),
  webpAlpha: path.join(data, 'formats/lossless_alpha.webp'),
  unicode: path.join(tmp, 'café ☕.png'),
};
fs.copyFileSync(path.join(data, 'reference/images/img_a.png'), images.unicode);
const unsupported = path.join(data, 'formats/rle8.bmp');
const notImage = path.join(tmp, 'notes.png');
fs.writeFileSync(notImage, 'these are notes, not an image\n');
const tooLarge = path.join(tmp, 'huge.png');
fs.writeFileSync(tooLarge, Buffer.alloc(1536 * 1024, 7));  // 1.5 MB; the server takes 1 MB

let server;
let browser;
let page;
const pageErrors = [];

before(async () => {
  server = await startServer(['--bundle', env('EMOVLM_SERVE_BUNDLE'), '--max-mb', '1']);
  browser = await puppeteer.launch({
    executablePath: process.env.EMOVLM_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    userDataDir: fs.mkdtempSync(path.join(tmp, 'profile-')),
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
           '--no-first-run', '--disable-sync', '--disable-dev-shm-usage'],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 900 });
  page.on('pageerror', (e) => pageErrors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy|Uncaught/i.test(m.text())) pageErrors.push(`console: ${m.text()}`);
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

// A File built in the page from a file here (for paste and drop, which have no native driver).
async function dispatchFiles(kind, files) {
  const payload = files.map((f) => ({ name: path.basename(f), b64: fs.readFileSync(f).toString('base64') }));
  await page.evaluate((kind, payload) => {
    const dt = new DataTransfer();
    for (const { name, b64 } of payload) {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], name));
    }
    if (kind === 'paste') {
      document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
    } else {
      const drop = document.querySelector('#drop');
      drop.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      drop.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  }, kind, payload);
}

const pct = (p) => `${(100 * p).toFixed(1)}%`;

test('the page shows what predict --json gives, for every format and every way in', async () => {
  await page.goto(server.url, { waitUntil: 'networkidle0' });
  await page.waitForFunction(() => document.querySelector('#about').textContent.includes('Classes:'));

  // the keyboard: Tab reaches the drop zone, Enter opens the file picker
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'drop');
  // waitForFileChooser turns on Chromium's file-chooser interception without waiting for it; a key
  // press that overtakes it opens headless Chromium's own (invisible, cancelled) dialog instead. A
  // round trip over the page's DevTools connection after it makes sure interception is on before Enter.
  const chooserOpened = page.waitForFileChooser({ timeout: 60000 });
  await page.evaluate(() => 0);
  await page.keyboard.press('Enter');
  const chooser = await chooserOpened;
  await chooser.accept([images.jpeg]);
  await dispatchFiles('drop', [images.gif, images.bmp]);
  await dispatchFiles('paste', [images.png]);
  const input = await page.$('#files');
  await input.uploadFile(images.webp, images.webpAlpha, images.unicode, unsupported, notImage, tooLarge);

  const total = Object.keys(images).length + 3;
  await page.waitForFunction(
    (n) => {
      const cards = [...document.querySelectorAll('.card')];
      return cards.length === n && cards.every((c) => c.dataset.state !== 'pending');
    },
    { timeout: 240000 }, total);

  const expected = JSON.parse(execFileSync(env('EMOVLM_CLI'),
    ['predict', '--bundle', env('EMOVLM_SERVE_BUNDLE'), '--json', '--device', 'cpu', ...Object.values(images)],
    { encoding: 'utf8', maxBuffer: 1 << 26 }));
  assert.equal(expected.length, Object.keys(images).length);

  for (const want of expected) {
    const name = path.basename(want.image);
    const got = await page.$eval(`.card[data-file="${name}"]`, (card) => {
      const rows = (sel) => [...card.querySelectorAll(`${sel} .bar-row`)].map((r) => ({
        label: r.dataset.label, prob: Number(r.dataset.prob), text: r.querySelector('.value').textContent,
      }));
      const legend = card.querySelector('.legend');
      return {
        state: card.dataset.state,
        emotion: card.querySelector('.emotion').textContent,
        confidence: Number(card.querySelector('.confidence').dataset.prob),
        confidenceText: card.querySelector('.confidence').textContent,
        final: rows('.bars[data-source="final"]'),
        vlmAnswer: card.querySelector('.vlm-answer').textContent,
        vlm: rows('.bars[data-source="vlm"]'),
        top3: [...card.querySelectorAll('.top3 li')].map((li) => ({ label: li.dataset.label, prob: Number(li.dataset.prob) })),
        weights: legend ? { vlm: Number(legend.dataset.vlm), head: Number(legend.dataset.head) } : null,
        influence: [...card.querySelectorAll('.influence li')].map((li) => ({
          input: li.dataset.input, delta: Number(li.dataset.delta), text: li.textContent,
        })),
        time: card.querySelector('.time').textContent,
        shown: card.querySelector('.details').checkVisibility(),
      };
    });
    assert.equal(got.state, 'done', name);
    assert.ok(got.shown, `${name}: the details are not visible`);
    assert.equal(got.emotion, want.emotion, name);
    assert.equal(got.confidence, want.confidence, name);
    assert.equal(got.confidenceText, `(${pct(want.confidence)})`, name);
    const labels = Object.keys(want.gate.probabilities);
    assert.equal(got.final.length, labels.length, `${name}: a bar per class`);
    for (const row of got.final) {
      assert.equal(row.prob, want.gate.probabilities[row.label], `${name} final ${row.label}`);
      assert.equal(row.text, pct(want.gate.probabilities[row.label]), `${name} final ${row.label}`);
    }
    assert.equal(got.vlmAnswer, want.vlm.answer, name);
    assert.equal(got.vlm.length, labels.length, `${name}: a VLM bar per class`);
    for (const row of got.vlm) assert.equal(row.prob, want.vlm.probabilities[row.label], `${name} vlm ${row.label}`);
    assert.deepEqual(got.top3, want.head_top3.map((t) => ({ label: t.label, prob: t.probability })), name);
    if (want.gate.weights) assert.deepEqual(got.weights, want.gate.weights, name);
    // how much each input moved this image's answer, as /predict says
    assert.deepEqual(got.influence.map((i) => [i.input, i.delta]),
      [['vlm', want.gate.influence.vlm], ['head', want.gate.influence.head]], name);
    assert.match(got.influence[0].text, new RegExp(`without it: ${want.gate.influence.without_vlm.emotion}`), name);
    assert.match(got.time, /\d+ ms/, name);
  }

  const errorOf = (name) => page.$eval(`.card[data-file="${name}"]`, (c) => ({
    state: c.dataset.state, text: c.querySelector('.error').textContent, shown: c.querySelector('.error').checkVisibility(),
  }));
  const rle = await errorOf('rle8.bmp');
  assert.equal(rle.state, 'error');
  assert.ok(rle.shown);
  assert.match(rle.text, /rle8\.bmp: unsupported BMP compression RLE8/);
  const notes = await errorOf('notes.png');
  assert.equal(notes.state, 'error');
  assert.match(notes.text, /notes\.png: not a/);
  const huge = await errorOf('huge.png');
  assert.equal(huge.state, 'error');
  assert.match(huge.text, /huge\.png: 1\.5 MB is over this server's limit of 1\.0 MB/);
  assert.match(await page.$eval('#status', (s) => s.textContent), /10 images: 7 done, 3 failed/);

  fs.mkdirSync(outDir, { recursive: true });
  await page.screenshot({ path: path.join(outDir, 'serve-page.png'), fullPage: true });
  const light = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'dark' }]);
  const dark = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.notEqual(light, dark, 'the page looks the same in the dark scheme');
  await page.screenshot({ path: path.join(outDir, 'serve-page-dark.png'), fullPage: true });
  assert.deepEqual(pageErrors, []);
});
