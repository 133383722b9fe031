// Tessera web console: plain ES module, no build step. Chart.js (UMD, /vendor/chart.umd.js) draws
// the charts. Every request carries the operator's token (sessionStorage) as `Authorization:
// Bearer`; mutations also carry the CSRF header. Live views read `text/event-stream` answers with
// fetch (EventSource cannot send the header). See docs/console.md.

const TOKEN_KEY = 'tessera-console-token';
const $ = (sel, root = document) => root.querySelector(sel);
const main = $('#main');
let pageAbort = new AbortController();

const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
function headers(mutation) {
  const h = {};
  if (token()) h.authorization = `Bearer ${token()}`;
  if (mutation) h['x-tessera-console'] = '1';
  return h;
}

class ApiError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

async function api(path, { method = 'GET', body, signal } = {}) {
  const r = await fetch(`/api${path}`, { method, headers: headers(method !== 'GET'), body, signal });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(j.error?.code ?? `HTTP_${r.status}`, j.error?.message ?? r.statusText);
  return j;
}

/** Why a request was refused, in words an operator can act on. */
function explain(err) {
  const hint = {
    UNAUTHENTICATED: token() ? 'the token was not accepted: enter a valid one above' : 'this cluster needs a token: enter one above',
    PERMISSION_DENIED: 'your token does not allow this (read: view; API token: submit and cancel; admin token: nodes and drain)',
  }[err.code];
  return `${err.code}: ${err.message}${hint ? ` — ${hint}` : ''}`;
}

function notice(text) {
  const n = $('#notice');
  if (!text) { n.hidden = true; n.textContent = ''; return; }
  n.hidden = false;
  n.textContent = text;
}

/**
 * Reads a stream of server-sent events over fetch; reconnects with backoff when it drops (unless
 * the server said `end`). `onEvent(name, data)`; refusals (401/403) are shown and end it.
 */
function subscribe(query, onEvent, signal) {
  let delay = 500;
  const run = async () => {
    while (!signal.aborted) {
      let ended = false;
      try {
        const r = await fetch(`/api/stream?${query}`, { headers: headers(false), signal });
        if (!r.ok) {
          const j = await r.json().catch(() => ({}));
          const e = new ApiError(j.error?.code ?? `HTTP_${r.status}`, j.error?.message ?? r.statusText);
          onEvent('refused', e);
          if (r.status === 401 || r.status === 403 || r.status === 404 || r.status === 400) return;
          throw e;
        }
        delay = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const frame = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let ev = 'message';
            let data = '';
            for (const line of frame.split('\n')) {
              if (line.startsWith('event: ')) ev = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (!data) continue;
            const parsed = JSON.parse(data);
            if (ev === 'end') ended = true;
            if (ev === 'error') onEvent('refused', new ApiError(parsed.code, parsed.message));
            else onEvent(ev, parsed);
          }
        }
      } catch (err) {
        if (signal.aborted) return;
      }
      if (ended || signal.aborted) return;
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 8000);
    }
  };
  void run();
}

// ---------- helpers ----------
const short = (s) => String(s).replace(/^JOB_STATE_/, '').replace(/^SEGMENT_STATE_/, '');
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat()) if (k !== undefined && k !== null) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}
const stateBadge = (s) => el('span', { class: `state ${short(s)}` }, short(s));
function age(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}
const duration = (sec) => (sec < 90 ? `${Math.round(sec)} s` : `${Math.floor(sec / 60)} min ${Math.round(sec % 60)} s`);
const TERMINAL = new Set(['JOB_STATE_SUCCEEDED', 'JOB_STATE_FAILED', 'JOB_STATE_CANCELLED']);
const bytes = (n) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(0)} kB` : `${n} B`);
const inputName = (j) => j.spec?.inputName || (j.spec?.inputUri ?? '').split('/').pop() || '';
function renditionsOf(j) {
  const r = j.result?.renditions;
  if (r?.length) return r.map((x) => x.name).join(', ');
  const l = j.spec?.ladder;
  return l?.length ? l.map((x) => x.name || `${x.height}p`).join(', ') : 'default ladder';
}

async function cancelJob(id, button) {
  button.disabled = true;
  try {
    const j = await api(`/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
    notice('');
    button.textContent = `Cancel requested (${short(j.state)})`;
  } catch (err) {
    button.disabled = false;
    notice(`Cancel of ${id} refused. ${explain(err)}`);
  }
}

// ---------- Jobs page ----------
function jobsPage(signal, params) {
  main.replaceChildren($('#tpl-jobs').content.cloneNode(true));
  const filter = $('#state-filter');
  filter.value = params.get('state') ?? '';
  const tbody = $('#jobs-table tbody');
  let inner = new AbortController();
  signal.addEventListener('abort', () => inner.abort());
  const listen = () => {
    inner.abort();
    inner = new AbortController();
    signal.addEventListener('abort', () => inner.abort(), { once: true });
    $('#jobs-live').textContent = 'connecting…';
    subscribe(`topic=jobs&state=${encodeURIComponent(filter.value)}`, (ev, data) => {
      if (ev === 'refused') { $('#jobs-live').textContent = 'not live'; notice(`The job list cannot be shown. ${explain(data)}`); return; }
      $('#jobs-live').textContent = `live · updated ${new Date().toLocaleTimeString()}`;
      renderJobs(tbody, data.jobs);
    }, inner.signal);
  };
  filter.addEventListener('change', () => {
    history.replaceState(null, '', `#/jobs${filter.value ? `?state=${filter.value}` : ''}`);
    listen();
  });
  listen();
  $('#upload-form').addEventListener('submit', (e) => { e.preventDefault(); uploadJob(); });
}

function renderJobs(tbody, jobs) {
  const rows = jobs.map((j) => {
    const live = !TERMINAL.has(j.state);
    const eta = live && j.etaP50Sec > 0 ? `${duration(j.etaP50Sec)}${j.etaP90Sec > j.etaP50Sec ? ` (≤ ${duration(j.etaP90Sec)})` : ''}` : '–';
    const pct = Math.round(j.progress ?? 0);
    return el('tr', { 'data-job-id': j.id, 'data-state': short(j.state) },
      el('td', {}, el('a', { href: `#/job/${encodeURIComponent(j.id)}` }, el('code', {}, j.id))),
      el('td', {}, inputName(j)),
      el('td', { class: 'job-state' }, stateBadge(j.state), j.errorCode ? ` ${j.errorCode}` : ''),
      el('td', {}, el('progress', { max: 100, value: pct, 'aria-label': `Progress of ${j.id}` }), ` ${pct}%`),
      el('td', {}, eta),
      el('td', {}, renditionsOf(j)),
      el('td', { title: new Date(j.createdAtMs).toISOString() }, age(j.createdAtMs)),
      el('td', {}, live ? el('button', { type: 'button', class: 'danger', 'aria-label': `Cancel job ${j.id}`, onclick: (e) => cancelJob(j.id, e.currentTarget) }, 'Cancel') : ''),
    );
  });
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 8 }, 'No jobs.')));
  tbody.replaceChildren(...rows);
}

/** Upload with XMLHttpRequest: its upload events give progress (fetch has none for request bodies). */
function uploadJob() {
  const file = $('#upload-file').files[0];
  if (!file) return;
  const status = $('#upload-status');
  const bar = $('#upload-progress');
  const btn = $('#upload-submit');
  const q = new URLSearchParams({ name: file.name });
  if ($('#upload-ladder').value.trim()) q.set('ladder', $('#upload-ladder').value.trim());
  if ($('#upload-package').value) q.set('package', $('#upload-package').value);
  const xhr = new XMLHttpRequest();
  xhr.open('POST', `/api/upload?${q}`);
  for (const [k, v] of Object.entries(headers(true))) xhr.setRequestHeader(k, v);
  xhr.setRequestHeader('content-type', 'application/octet-stream');
  bar.hidden = false;
  bar.value = 0;
  btn.disabled = true;
  status.textContent = `uploading ${file.name}…`;
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    bar.value = Math.round((e.loaded / e.total) * 100);
    status.textContent = `uploading ${file.name}: ${bar.value}% of ${bytes(e.total)}`;
  };
  xhr.onload = () => {
    btn.disabled = false;
    let j = {};
    try { j = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status === 200) {
      bar.value = 100;
      status.textContent = `submitted: job ${j.jobId}`;
      status.dataset.jobId = j.jobId;
      notice('');
    } else {
      const err = new ApiError(j.error?.code ?? `HTTP_${xhr.status}`, j.error?.message ?? xhr.statusText);
      status.textContent = 'refused';
      notice(`Upload refused. ${explain(err)}`);
    }
  };
  xhr.onerror = () => { btn.disabled = false; status.textContent = 'upload failed: the connection was lost'; };
  xhr.send(file);
}

// ---------- Job page ----------
const TL_STATES = ['queued', 'transferring', 'encoding', 'done', 'failed', 'redone', 'cancelled'];
const TL_COLOURS = { queued: '#9b7fd1', transferring: '#f0a43a', encoding: '#2f7fe0', done: '#2e9a4b', failed: '#c8372d', redone: '#8a6d3b', cancelled: '#7d8690' };

/** A fill for a state: hatched for failed and redone, dotted for queued, plain otherwise. */
function fillFor(state) {
  const colour = TL_COLOURS[state];
  if (!['failed', 'redone', 'queued'].includes(state)) return colour;
  const c = document.createElement('canvas');
  c.width = 8; c.height = 8;
  const g = c.getContext('2d');
  g.fillStyle = colour; g.globalAlpha = 0.45; g.fillRect(0, 0, 8, 8); g.globalAlpha = 1;
  g.strokeStyle = colour; g.fillStyle = colour; g.lineWidth = 2;
  if (state === 'queued') { g.beginPath(); g.arc(4, 4, 1.6, 0, Math.PI * 2); g.fill(); }
  else { g.beginPath(); g.moveTo(0, 8); g.lineTo(8, 0); g.stroke(); }
  return g.createPattern(c, 'repeat');
}

/**
 * The timeline's bars from the job's status trail (segment/<n> entries: node, attempt, state,
 * time): one bar per attempt of each segment on the node that ran it.
 */
export function timelineBars(job) {
  const t0 = job.createdAtMs;
  const endOfJob = TERMINAL.has(job.state) ? (job.finishedAtMs || job.updatedAtMs || job.nowMs) : job.nowMs;
  const running = job.history.find((h) => h.scope === 'job' && h.state === 'RUNNING');
  const bySeg = new Map();
  for (const h of job.history) {
    const m = /^segment\/(\d+)$/.exec(h.scope);
    if (!m) continue;
    const i = Number(m[1]);
    if (!bySeg.has(i)) bySeg.set(i, []);
    bySeg.get(i).push(h);
  }
  const bars = [];
  for (const s of job.segments) {
    const entries = (bySeg.get(s.index) ?? []).slice().sort((a, b) => a.atMs - b.atMs);
    const media = (s.endSec ?? 0) - (s.startSec ?? 0);
    if (entries.length === 0) {
      const st = short(s.state);
      if (st === 'PENDING' || st === 'UNSPECIFIED') bars.push({ segment: s.index, node: s.nodeId, attempt: 0, state: 'queued', start: ((running?.atMs ?? job.createdAtMs) - t0) / 1000, end: (endOfJob - t0) / 1000, transfer: 0, encode: 0, media });
      continue;
    }
    const groups = [];
    for (const e of entries) {
      const g = groups[groups.length - 1];
      if (!g || g.attempt !== e.attempt) groups.push({ attempt: e.attempt, node: e.nodeId, entries: [e] });
      else g.entries.push(e);
    }
    groups.forEach((g, gi) => {
      const next = groups[gi + 1];
      const at = (state) => g.entries.find((e) => e.state === state)?.atMs;
      const start = g.entries[0].atMs;
      const transferAt = at('TRANSFERRING');
      const encodeAt = at('TRANSCODING');
      const doneAt = at('DONE');
      const end = doneAt ?? next?.entries[0].atMs ?? endOfJob;
      let state;
      if (doneAt && next) state = 'redone';
      else if (doneAt) state = 'done';
      else if (next) state = 'failed';
      else if (short(s.state) === 'FAILED') state = 'failed';
      else if (short(s.state) === 'CANCELLED' || job.state === 'JOB_STATE_CANCELLED') state = 'cancelled';
      else if (TERMINAL.has(job.state)) state = 'failed';
      else state = encodeAt ? 'encoding' : transferAt ? 'transferring' : 'queued';
      bars.push({
        segment: s.index, node: g.node || s.nodeId, attempt: g.attempt, state,
        start: (start - t0) / 1000, end: Math.max((end - t0) / 1000, (start - t0) / 1000 + 0.05),
        transfer: encodeAt && transferAt ? (encodeAt - transferAt) / 1000 : 0,
        encode: encodeAt ? ((doneAt ?? end) - encodeAt) / 1000 : 0,
        media,
        reason: g.entries[0].reason,
      });
    });
  }
  const nodes = [...new Set(bars.map((b) => b.node))].sort();
  // The job's own phases around the segments: before the first assignment, after the last DONE.
  const jobAt = (state) => job.history.find((h) => h.scope === 'job' && h.state === state)?.atMs;
  const phases = [];
  const runAt = jobAt('RUNNING');
  if (runAt) phases.push({ phase: 'preparing', start: 0, end: (runAt - t0) / 1000 });
  const finAt = jobAt('FINALIZING');
  if (finAt) phases.push({ phase: 'finalizing', start: (finAt - t0) / 1000, end: ((TERMINAL.has(job.state) ? endOfJob : job.nowMs) - t0) / 1000 });
  return { nodes, bars, phases };
}

/** Writes each bar's segment, attempt and state on it (when it fits): colour is not the only sign. */
const barLabels = {
  id: 'tesseraBarLabels',
  afterDatasetsDraw(chart) {
    const g = chart.ctx;
    g.save();
    g.font = '11px system-ui, sans-serif';
    g.textBaseline = 'middle';
    chart.data.datasets.forEach((ds, di) => {
      const meta = chart.getDatasetMeta(di);
      if (meta.hidden || ds.kind === 'phase') return;
      meta.data.forEach((bar, i) => {
        const b = ds.data[i].bar;
        const text = ds.kind === 'job' ? ds.data[i].phase.phase : `#${b.segment}${b.attempt > 1 ? ` a${b.attempt}` : ''} ${b.state}`;
        const { x, base, y } = bar.getProps(['x', 'base', 'y'], true);
        const w = Math.abs(x - base);
        if (g.measureText(text).width + 6 > w) return;
        g.fillStyle = '#fff';
        g.strokeStyle = '#000a';
        g.lineWidth = 3;
        g.strokeText(text, Math.min(x, base) + 3, y);
        g.fillText(text, Math.min(x, base) + 3, y);
      });
    });
    g.restore();
  },
};

function drawTimeline(canvas, tl) {
  const box = canvas.parentElement;
  box.style.height = `${Math.max(140, 80 + (tl.nodes.length + (tl.phases.length ? 1 : 0)) * 46)}px`;
  const segmentSets = TL_STATES.filter((st) => tl.bars.some((b) => b.state === st)).map((st) => ({
    kind: 'segment',
    label: st,
    data: tl.bars.filter((b) => b.state === st).map((b) => ({ x: [b.start, b.end], y: b.node, bar: b })),
    backgroundColor: fillFor(st),
    borderColor: TL_COLOURS[st],
    borderWidth: 1,
    borderSkipped: false,
    grouped: false,
    barPercentage: 0.8,
    categoryPercentage: 0.9,
    order: 2,
  }));
  // The transfer part of each attempt, over its bar (thinner): the rest of the bar is encoding.
  const transfers = tl.bars.filter((b) => b.transfer > 0);
  const transferSet = transfers.length ? [{
    kind: 'phase',
    label: 'transfer part',
    data: transfers.map((b) => ({ x: [b.start, b.start + b.transfer], y: b.node, bar: b })),
    backgroundColor: TL_COLOURS.transferring,
    borderColor: '#a86a10',
    borderWidth: 1,
    grouped: false,
    barPercentage: 0.35,
    categoryPercentage: 0.9,
    order: 1,
  }] : [];
  const jobSet = tl.phases.length ? [{
    kind: 'job',
    label: 'job: preparing / finalizing',
    data: tl.phases.map((p) => ({ x: [p.start, Math.max(p.end, p.start + 0.05)], y: 'job', phase: p })),
    backgroundColor: '#9aa3ae',
    borderColor: '#5b6673',
    borderWidth: 1,
    grouped: false,
    barPercentage: 0.6,
    categoryPercentage: 0.9,
    order: 2,
  }] : [];
  const datasets = [...jobSet, ...segmentSets, ...transferSet];
  const data = { labels: tl.phases.length ? ['job', ...tl.nodes] : tl.nodes, datasets };
  let chart = window.Chart?.getChart(canvas);
  if (chart) {
    chart.data = data;
    chart.update('none');
    return chart;
  }
  if (!window.Chart) return undefined;
  chart = new window.Chart(canvas, {
    type: 'bar',
    data,
    plugins: [barLabels],
    options: {
      indexAxis: 'y',
      animation: false,
      maintainAspectRatio: false,
      responsive: true,
      scales: {
        x: { type: 'linear', min: 0, title: { display: true, text: 'seconds since the job was submitted' } },
        y: { type: 'category', title: { display: true, text: 'node' } },
      },
      plugins: {
        legend: { display: true, position: 'bottom' },
        tooltip: {
          callbacks: {
            label: (c) => {
              if (c.raw.phase) return `job ${c.raw.phase.phase}: ${c.raw.phase.start.toFixed(1)}–${c.raw.phase.end.toFixed(1)} s`;
              const b = c.raw.bar;
              if (c.dataset.kind === 'phase') return `segment ${b.segment}, attempt ${b.attempt}: transfer ${b.transfer.toFixed(1)} s`;
              return `segment ${b.segment}, attempt ${b.attempt}: ${b.state}, ${b.start.toFixed(1)}–${b.end.toFixed(1)} s${b.transfer ? `, transfer ${b.transfer.toFixed(1)} s` : ''}${b.encode ? `, encode ${b.encode.toFixed(1)} s` : ''}`;
            },
          },
        },
      },
    },
  });
  return chart;
}

function jobPage(signal, id) {
  main.replaceChildren($('#tpl-job').content.cloneNode(true));
  $('#job-id').textContent = id;
  const legend = $('#timeline-legend');
  legend.replaceChildren(...TL_STATES.map((st) => {
    const sw = el('span', { class: 'sw', 'aria-hidden': 'true' });
    sw.style.background = TL_COLOURS[st];
    if (['failed', 'redone'].includes(st)) sw.style.backgroundImage = 'repeating-linear-gradient(135deg, #fff8 0 2px, transparent 2px 5px)';
    if (st === 'queued') sw.style.backgroundImage = 'radial-gradient(#fff9 1px, transparent 1.5px)';
    return el('li', {}, sw, st);
  }));
  let downloadShown = false;
  subscribe(`topic=job&id=${encodeURIComponent(id)}`, (ev, data) => {
    if (ev === 'refused') { notice(`Job ${id} cannot be shown. ${explain(data)}`); return; }
    if (ev !== 'job') return;
    notice('');
    renderJob(data);
    if (!downloadShown && data.result?.key) {
      downloadShown = true;
      $('#job-download-box').replaceChildren(el('button', { type: 'button', id: 'job-download', onclick: () => downloadResult(id) }, 'Download the results (zip with every rendition)'));
    }
  }, signal);
}

async function downloadResult(id) {
  try {
    const { url } = await api(`/jobs/${encodeURIComponent(id)}/download-link`, { method: 'POST' });
    const a = el('a', { href: url, download: `${id}.zip` });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) {
    notice(`Download refused. ${explain(err)}`);
  }
}

function renderJob(j) {
  const facts = [
    ['State', stateBadge(j.state)],
    ['Stage', j.stage || '–'],
    ['Progress', `${Math.round(j.progress ?? 0)}%`],
    ['Input', inputName(j)],
    ['Submitted', new Date(j.createdAtMs).toLocaleString()],
    ['Took', j.finishedAtMs ? duration((j.finishedAtMs - j.createdAtMs) / 1000) : `${duration((j.nowMs - j.createdAtMs) / 1000)} so far`],
  ];
  if (!TERMINAL.has(j.state) && j.etaP50Sec > 0) facts.push(['ETA', duration(j.etaP50Sec)]);
  const tl = timelineBars(j);
  if (tl.phases.length) {
    const prep = tl.phases.find((p) => p.phase === 'preparing');
    const fin = tl.phases.find((p) => p.phase === 'finalizing');
    const segEnd = fin ? fin.start : Math.max(0, ...tl.bars.map((b) => b.end));
    facts.push(['Phases', `preparing ${prep ? (prep.end - prep.start).toFixed(1) : '–'} s · segments ${prep ? (segEnd - prep.end).toFixed(1) : '–'} s${fin ? ` · finalizing ${(fin.end - fin.start).toFixed(1)} s` : ''}`]);
  }
  if (j.source?.width) facts.push(['Source', `${j.source.width}×${j.source.height}, ${(j.source.durationSec ?? 0).toFixed(1)} s, ${j.source.videoCodec ?? ''}`]);
  $('#job-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { 'data-fact': k.toLowerCase() }, v)]));
  const errBox = $('#job-error');
  if (j.errorCode) { errBox.hidden = false; errBox.replaceChildren(el('strong', {}, j.errorCode), `: ${j.errorMessage}`); } else errBox.hidden = true;
  const cancel = $('#job-cancel');
  cancel.hidden = TERMINAL.has(j.state);
  cancel.onclick = (e) => cancelJob(j.id, e.currentTarget);
  // Timeline
  const canvas = $('#timeline');
  canvas.dataset.rows = String(tl.nodes.length);
  canvas.dataset.bars = String(tl.bars.length);
  drawTimeline(canvas, tl);
  $('#timeline-table tbody').replaceChildren(...tl.bars.slice().sort((a, b) => a.node.localeCompare(b.node) || a.start - b.start).map((b) => el('tr', { 'data-node': b.node, 'data-segment': b.segment, 'data-attempt': b.attempt, 'data-state': b.state },
    el('th', { scope: 'row' }, b.node), el('td', {}, b.segment), el('td', {}, b.attempt || '–'), el('td', {}, el('span', { class: `state ${b.state}` }, b.state)),
    el('td', {}, b.start.toFixed(1)), el('td', {}, b.transfer ? b.transfer.toFixed(1) : '–'), el('td', {}, b.encode ? b.encode.toFixed(1) : '–'), el('td', {}, (b.end - b.start).toFixed(1)), el('td', {}, b.media.toFixed(1)))));
  // Renditions
  const rs = j.result?.renditions ?? [];
  $('#renditions-table tbody').replaceChildren(...(rs.length ? rs.map((r) => el('tr', { 'data-rendition': r.name },
    el('td', {}, r.name), el('td', {}, `${r.width}×${r.height}`), el('td', {}, r.codec), el('td', {}, `${r.videoBitrateKbps} kbps`), el('td', {}, r.frames ?? ''), el('td', {}, bytes(Number(r.bytes ?? 0))))) : [el('tr', {}, el('td', { colspan: 6 }, TERMINAL.has(j.state) ? 'No results.' : 'Not finished yet.'))]));
  if (j.result?.streaming) {
    $('#job-download-box').append(el('span', { class: 'hint' }, ` Streaming: ${j.result.streaming.hlsUri || ''} ${j.result.streaming.dashUri || ''}`));
  }
  // Trail
  $('#job-trail').replaceChildren(...j.history.map((h) => el('li', {}, `${new Date(h.atMs).toLocaleTimeString()} ${h.scope} ${h.state}${h.nodeId ? ` on ${h.nodeId} (attempt ${h.attempt})` : ''}${h.reason ? ` — ${h.reason}` : ''}`)));
}

// ---------- Nodes and Cluster pages ----------
async function nodeAction(id, action, button) {
  button.disabled = true;
  try {
    const n = await api(`/nodes/${encodeURIComponent(id)}/${action}`, { method: 'POST' });
    notice('');
    const row = document.querySelector(`#nodes-table tr[data-node="${CSS.escape(id)}"]`);
    if (row) {
      row.dataset.state = n.state;
      row.querySelector('.node-state')?.replaceChildren(stateBadge(n.state));
      const other = action === 'drain' ? 'undrain' : 'drain';
      button.replaceWith(el('button', { type: 'button', 'aria-label': `${other === 'drain' ? 'Drain' : 'Undrain'} node ${id}`, onclick: (e) => nodeAction(id, other, e.currentTarget) }, other === 'drain' ? 'Drain' : 'Undrain'));
    }
  } catch (err) {
    notice(`${action === 'drain' ? 'Drain' : 'Undrain'} of ${id} refused. ${explain(err)}`);
  } finally {
    button.disabled = false;
  }
}

function renderNodes(nodes) {
  const tbody = $('#nodes-table tbody');
  if (!tbody) return;
  tbody.replaceChildren(...nodes.map((n) => el('tr', { 'data-node': n.id, 'data-state': n.state },
    el('th', { scope: 'row' }, n.id),
    el('td', { class: 'node-state' }, stateBadge(n.state), n.stateReason ? el('div', { class: 'hint' }, n.stateReason) : ''),
    el('td', {}, `${n.busySlots ?? 0} / ${n.slots ?? 0}`),
    el('td', {}, n.cores || '–'),
    el('td', {}, (n.codecFamilies ?? []).join(' ') || '–'),
    el('td', {}, n.speedMps ? `${Number(n.speedMps).toFixed(1)} MP/s` : '–'),
    el('td', {}, n.segmentsDone ?? 0),
    el('td', {}, n.lastHeartbeatMs ? `${age(Number(n.lastHeartbeatMs))} ago` : '–'),
    el('td', {}, n.state === 'draining'
      ? el('button', { type: 'button', 'aria-label': `Undrain node ${n.id}`, onclick: (e) => nodeAction(n.id, 'undrain', e.currentTarget) }, 'Undrain')
      : el('button', { type: 'button', 'aria-label': `Drain node ${n.id}`, onclick: (e) => nodeAction(n.id, 'drain', e.currentTarget) }, 'Drain')),
  )));
  if (nodes.length === 0) tbody.replaceChildren(el('tr', {}, el('td', { colspan: 9 }, 'No node agents registered.')));
}

function nodesPage(signal) {
  main.replaceChildren($('#tpl-nodes').content.cloneNode(true));
  subscribe('topic=cluster', (ev, data) => {
    if (ev === 'refused') { notice(`Nodes cannot be shown. ${explain(data)}`); return; }
    notice('');
    renderNodes(data.nodes ?? []);
    const d = data.autoscalerDecisions ?? [];
    $('#autoscaler').replaceChildren(...(d.length ? d.slice().reverse().map((x) => el('li', {}, x)) : [el('li', {}, 'No autoscaler decisions (the autoscaler is off or has not acted).')]));
  }, signal);
}

function clusterPage(signal) {
  main.replaceChildren($('#tpl-cluster').content.cloneNode(true));
  let chart;
  subscribe('topic=cluster', (ev, data) => {
    if (ev === 'refused') { notice(`The cluster cannot be shown. ${explain(data)}`); return; }
    notice('');
    const nodes = data.nodes ?? [];
    const facts = [
      ['Leader', data.leaderId || 'none (an election is under way)'],
      ['Queue depth', data.queueDepth ?? 0],
      ['Frames per second (1 min)', Number(data.framesPerSecond1m ?? 0).toFixed(1)],
      ['Segments in flight', data.segmentsInFlight ?? 0],
      ['Nodes', `${nodes.filter((n) => n.state === 'ready').length} ready of ${nodes.length}`],
      ['Slots busy', `${nodes.reduce((a, n) => a + (n.busySlots ?? 0), 0)} / ${nodes.reduce((a, n) => a + (n.slots ?? 0), 0)}`],
    ];
    $('#cluster-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { 'data-fact': k.toLowerCase() }, String(v))]));
    $('#cluster-states').replaceChildren(...(data.jobsByState ?? []).map((s) => el('li', {}, stateBadge(s.state), ` ${s.count}`)));
    const pts = (data.fpsHistory ?? []).map((p) => ({ x: (p.atMs - Date.now()) / 60000, y: p.fps }));
    $('#throughput-text').textContent = pts.length ? `${pts.length} samples; now ${Number(data.framesPerSecond1m ?? 0).toFixed(1)} frames/s` : 'no samples yet';
    if (!window.Chart) return;
    const canvas = $('#throughput');
    if (!chart) {
      chart = new window.Chart(canvas, {
        type: 'line',
        data: { datasets: [{ label: 'frames per second', data: pts, borderColor: '#2f7fe0', backgroundColor: '#2f7fe033', fill: true, pointRadius: 0, tension: 0.2 }] },
        options: { animation: false, maintainAspectRatio: false, parsing: true, scales: { x: { type: 'linear', min: -10, max: 0, title: { display: true, text: 'minutes ago' } }, y: { beginAtZero: true, title: { display: true, text: 'frames/s' } } } },
      });
    } else {
      chart.data.datasets[0].data = pts;
      chart.update('none');
    }
  }, signal);
}

// ---------- routing ----------
function route() {
  pageAbort.abort();
  pageAbort = new AbortController();
  notice('');
  const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
  const parts = (path || '/jobs').split('/').filter(Boolean);
  const page = parts[0] || 'jobs';
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.page === (page === 'job' ? 'jobs' : page)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const params = new URLSearchParams(query);
  if (page === 'job' && parts[1]) { document.title = `Job ${parts[1]} · Tessera`; jobPage(pageAbort.signal, decodeURIComponent(parts[1])); }
  else if (page === 'nodes') { document.title = 'Nodes · Tessera'; nodesPage(pageAbort.signal); }
  else if (page === 'cluster') { document.title = 'Cluster · Tessera'; clusterPage(pageAbort.signal); }
  else { document.title = 'Jobs · Tessera'; jobsPage(pageAbort.signal, params); }
  document.body.dataset.page = page;
}

function showTokenState() {
  $('#token-state').textContent = token() ? 'token set for this tab' : 'no token';
}
$('#token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const v = $('#token').value.trim();
  if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
  $('#token').value = '';
  showTokenState();
  route();
});
$('#token-clear').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); showTokenState(); route(); });
window.addEventListener('hashchange', route);
// Chart.js is a deferred classic script: start once it (and the DOM) is there.
const start = () => { showTokenState(); route(); };
if (document.readyState === 'complete') start(); else window.addEventListener('load', start, { once: true });
