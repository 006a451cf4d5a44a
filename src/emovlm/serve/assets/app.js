// The page's behaviour: images come in (drop, pick, paste), each goes to POST /predict in turn,
// and each answer becomes a card: the final emotion, every class's probability, the VLM's answer
// and its label scores, the head's top 3, the gate's weights (or whatever explanation the answer
// carries), the time taken; errors show in the card.

const $ = (selector, root = document) => root.querySelector(selector);

const server = { labels: null, max_bytes: 32 << 20, auth: false };
const waiting = [];
let working = false;
let counts = { done: 0, failed: 0 };

const pct = (p) => `${(100 * p).toFixed(1)}%`;
const mb = (n) => `${(n / (1 << 20)).toFixed(1)} MB`;

async function loadServerInfo() {
  try {
    const res = await fetch('/health');
    Object.assign(server, await res.json());
  } catch (e) {
    status(`The server could not be reached (${e.message}).`);
  }
  if (server.auth) showKeyField();
  if (!server.labels) {
    status('This server has no bundle: it predicts nothing (its VLM answers on /v1/chat/completions).');
    $('#drop').setAttribute('aria-disabled', 'true');
  } else {
    $('#about').textContent += ` Classes: ${server.labels.join(', ')}.`;
  }
}

function showKeyField() {
  const row = $('#key-row');
  row.hidden = false;
  const input = $('#api-key');
  input.value = sessionStorage.getItem('emovlm-api-key') || '';
  input.addEventListener('change', () => sessionStorage.setItem('emovlm-api-key', input.value));
}

function status(text) {
  $('#status').textContent = text;
}

function updateStatus() {
  const total = counts.done + counts.failed + waiting.length + (working ? 1 : 0);
  status(`${total} image${total === 1 ? '' : 's'}: ${counts.done} done, ${counts.failed} failed` +
         (waiting.length || working ? `, ${waiting.length + (working ? 1 : 0)} to go` : ''));
}

function addFiles(files) {
  if (!server.labels) return;
  for (const file of files) {
    const card = $('#card').content.firstElementChild.cloneNode(true);
    card.dataset.file = file.name;
    $('.name', card).textContent = file.name;
    const img = $('img', card);
    img.src = URL.createObjectURL(file);
    img.alt = file.name;
    img.addEventListener('error', () => { img.removeAttribute('src'); }, { once: true });
    $('#results').prepend(card);
    waiting.push({ file, card });
  }
  updateStatus();
  next();
}

async function next() {
  if (working) return;
  working = true;
  while (waiting.length) {
    const { file, card } = waiting.shift();
    updateStatus();
    await predict(file, card);
  }
  working = false;
  updateStatus();
}

async function predict(file, card) {
  if (file.size === 0) return fail(card, `${file.name}: empty file`);
  if (file.size > server.max_bytes)
    return fail(card, `${file.name}: ${mb(file.size)} is over this server's limit of ${mb(server.max_bytes)}`);
  const form = new FormData();
  form.append('image', file, file.name);
  const headers = {};
  const key = $('#api-key').value;
  if (key) headers.Authorization = `Bearer ${key}`;
  const started = performance.now();
  let res;
  let body = null;
  try {
    res = await fetch('/predict', { method: 'POST', body: form, headers });
    body = await res.json().catch(() => null);
  } catch (e) {
    return fail(card, `${file.name}: the server could not be reached (${e.message})`);
  }
  const ms = performance.now() - started;
  if (!res.ok) {
    if (res.status === 401) showKeyField();
    const message = body && typeof body.error === 'string' ? body.error : `HTTP ${res.status}`;
    return fail(card, res.status === 503 ? `${message} (the server is busy)` : message);
  }
  show(card, body, ms);
}

function fail(card, message) {
  card.dataset.state = 'error';
  $('.working', card).textContent = 'Could not be scored';
  const p = $('.error', card);
  p.textContent = message;
  p.hidden = false;
  counts.failed += 1;
}

// Rows of bars for a {label: probability} map, in the server's label order; the largest marked.
function bars(container, probabilities) {
  container.replaceChildren();
  const labels = (server.labels || Object.keys(probabilities)).filter((l) => l in probabilities);
  const top = labels.reduce((a, b) => (probabilities[b] > probabilities[a] ? b : a), labels[0]);
  for (const label of labels) {
    const p = probabilities[label];
    const row = document.createElement('div');
    row.className = label === top ? 'bar-row top' : 'bar-row';
    row.dataset.label = label;
    row.dataset.prob = String(p);
    row.setAttribute('role', 'meter');
    row.setAttribute('aria-label', label);
    row.setAttribute('aria-valuemin', '0');
    row.setAttribute('aria-valuemax', '1');
    row.setAttribute('aria-valuenow', String(p));
    row.setAttribute('aria-valuetext', pct(p));
    const name = document.createElement('span');
    name.className = 'label';
    name.textContent = label;
    const track = document.createElement('span');
    track.className = 'track';
    const fill = document.createElement('span');
    fill.className = 'fill';
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    track.append(fill);
    const value = document.createElement('span');
    value.className = 'value';
    value.textContent = pct(p);
    row.append(name, track, value);
    container.append(row);
  }
}

// How much each input moved the decision: the answer's probability with each input and with that
// input made neutral (and what the gate would answer then), the gate's own weights on the VLM
// and the head where it computes them, a mixture's expert weights, and any other explanation the
// answer carries.
function moved(container, r) {
  container.replaceChildren();
  const gate = r.gate || {};
  const add = (el) => container.append(el);
  if (gate.influence && typeof gate.influence.vlm === 'number') {
    const list = document.createElement('ul');
    list.className = 'influence';
    for (const [key, name] of [['vlm', 'VLM'], ['head', 'head']]) {
      const delta = gate.influence[key];
      const without = gate.influence[`without_${key}`] || {};
      const li = document.createElement('li');
      li.dataset.input = key;
      li.dataset.delta = String(delta);
      const sign = delta >= 0 ? '+' : '\u2212';
      li.textContent = `${name}: ${sign}${pct(Math.abs(delta))} to "${r.emotion}"` +
        (without.emotion ? `; without it: ${without.emotion} (${pct(without.emotion_probability)})` : '');
      list.append(li);
    }
    add(list);
  }
  if (gate.weights && typeof gate.weights.vlm === 'number') {
    const split = document.createElement('div');
    split.className = 'split';
    split.setAttribute('role', 'img');
    split.setAttribute('aria-label', `VLM ${pct(gate.weights.vlm)}, head ${pct(gate.weights.head)}`);
    const v = document.createElement('span');
    v.className = 'from-vlm';
    v.style.width = `${100 * gate.weights.vlm}%`;
    const h = document.createElement('span');
    h.className = 'from-head';
    h.style.width = `${100 * gate.weights.head}%`;
    split.append(v, h);
    const legend = document.createElement('div');
    legend.className = 'legend';
    legend.innerHTML = '<span class="vlm-share"></span><span class="head-share"></span>';
    $('.vlm-share', legend).textContent = `VLM ${pct(gate.weights.vlm)}`;
    $('.head-share', legend).textContent = `head ${pct(gate.weights.head)}`;
    legend.dataset.vlm = String(gate.weights.vlm);
    legend.dataset.head = String(gate.weights.head);
    add(split);
    add(legend);
  } else if (Array.isArray(gate.experts)) {
    const list = document.createElement('ol');
    list.className = 'experts';
    gate.experts.forEach((w) => {
      const li = document.createElement('li');
      li.textContent = `expert weight ${pct(w)}`;
      li.dataset.weight = String(w);
      list.append(li);
    });
    add(list);
  }
  if (r.explanation !== undefined) {
    const pre = document.createElement('pre');
    pre.className = 'explanation';
    pre.textContent = JSON.stringify(r.explanation, null, 1);
    add(pre);
  }
  const note = document.createElement('p');
  note.className = 'hint';
  note.textContent = gate.kind ? `Gate: ${gate.kind}.` : '';
  if (!container.childElementCount) note.textContent += ' This gate reports no weights.';
  add(note);
}

function show(card, r, ms) {
  card.dataset.state = 'done';
  $('.headline', card).hidden = true;
  $('.details', card).hidden = false;
  $('.emotion', card).textContent = r.emotion;
  $('.confidence', card).textContent = `(${pct(r.confidence)})`;
  $('.confidence', card).dataset.prob = String(r.confidence);
  $('.time', card).textContent = `· ${Math.round(ms)} ms`;
  card.dataset.ms = String(ms);
  bars($('.bars[data-source="final"]', card), r.gate.probabilities);
  $('.vlm-answer', card).textContent = r.vlm.answer;
  bars($('.bars[data-source="vlm"]', card), r.vlm.probabilities);
  const top3 = $('.top3', card);
  top3.replaceChildren();
  for (const t of r.head_top3) {
    const li = document.createElement('li');
    li.dataset.label = t.label;
    li.dataset.prob = String(t.probability);
    li.textContent = `${t.label} ${pct(t.probability)}`;
    top3.append(li);
  }
  moved($('.weights', card), r);
  counts.done += 1;
}

function setUp() {
  const drop = $('#drop');
  const input = $('#files');
  const pick = () => input.click();
  drop.addEventListener('click', pick);
  drop.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      pick();
    }
  });
  input.addEventListener('change', () => {
    addFiles([...input.files]);
    input.value = '';
  });
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    addFiles([...e.dataTransfer.files]);
  });
  document.addEventListener('paste', (e) => {
    const files = [...(e.clipboardData?.files || [])];
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
  loadServerInfo();
}

setUp();
