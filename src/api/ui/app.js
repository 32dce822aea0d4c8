// Strata UI: router, header (tenant), search page, service graph page.
import { h, s, request, getJSON, qs, sql, fmtDur, fmtTime, fmtAgo, colourOf, debounce, errorBox, durForTraceQL,
  resolveRange, rangePicker, getTenant, setTenant, latestDataEnd } from './util.js';
import { tracePage, comparePage } from './trace.js';

const view = document.getElementById('view');
const routes = { search: searchPage, trace: tracePage, compare: comparePage, graph: graphPage };
let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const qi = raw.indexOf('?');
  const path = qi < 0 ? raw : raw.slice(0, qi);
  const params = Object.fromEntries(new URLSearchParams(qi < 0 ? '' : raw.slice(qi + 1)));
  const segs = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { page: segs[0] || 'search', args: segs.slice(1), params };
}

function route() {
  if (current) { current.abort(); current = null; }
  const { page, args, params } = parseHash();
  const ctl = new AbortController();
  current = ctl;
  view.replaceChildren();
  view.className = '';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
  const fn = routes[page];
  document.title = `Strata · ${page[0].toUpperCase()}${page.slice(1)}`;
  if (!fn) { view.append(h('div.empty', `Unknown page "${page}". `, h('a', { href: '#/search' }, 'Go to search'))); return; }
  try {
    fn(view, args, params, ctl.signal);
  } catch (e) {
    console.warn(e);
    view.append(errorBox(e));
  }
}

// Sets the hash; re-runs the route when the hash did not change (same search again).
export function navigate(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function initHeader() {
  const tenant = document.getElementById('tenant');
  tenant.value = getTenant();
  const apply = () => { if (tenant.value.trim() !== getTenant()) { setTenant(tenant.value.trim()); route(); } };
  tenant.addEventListener('change', apply);
  tenant.addEventListener('keydown', e => { if (e.key === 'Enter') apply(); });
  const form = document.getElementById('goto-trace');
  form.addEventListener('submit', e => {
    e.preventDefault();
    const id = document.getElementById('goto-trace-id').value.trim();
    if (id) navigate(`#/trace/${encodeURIComponent(id)}`);
  });
}

// ---------------------------------------------------------------- search

const INTRINSICS = ['name', 'status', 'statusMessage', 'kind', 'duration', 'rootName', 'rootServiceName', 'traceDuration',
  'span:name', 'span:status', 'span:kind', 'span:duration', 'trace:rootName', 'trace:rootService', 'trace:duration', 'trace:id', 'span:id'];
const KEYWORDS = new Set(['error', 'ok', 'unset', 'server', 'client', 'producer', 'consumer', 'internal', 'unspecified']);

// "key=value key2=\"a b\" http.status_code>=500" -> TraceQL conditions; throws on syntax errors.
export function parseTags(str) {
  const out = [];
  const re = /\s*([\w.:\-/]+)\s*(=~|!~|!=|>=|<=|=|>|<)\s*("(?:[^"\\]|\\.)*"|[^\s"]+)\s*/y;
  let pos = 0;
  str = str || '';
  while (pos < str.length) {
    if (/^\s*$/.test(str.slice(pos))) break;
    re.lastIndex = pos;
    const m = re.exec(str);
    if (!m) throw new Error(`Tags: expected key=value at character ${pos + 1}: "${str.slice(pos).trim().slice(0, 30)}"`);
    pos = re.lastIndex;
    let [, key, op, val] = m;
    const intrinsic = INTRINSICS.includes(key);
    if (!intrinsic && !/^(span|resource|event|link|instrumentation)?\./.test(key)) key = '.' + key;
    let lit;
    if (val.startsWith('"')) lit = val;
    else if (/^(true|false)$/.test(val)) lit = val;
    else if (/^-?\d+(\.\d+)?$/.test(val)) lit = val;
    else if (intrinsic && (KEYWORDS.has(val) || /^\d+(\.\d+)?(ns|us|ms|s|m|h)$/.test(val))) lit = val;
    else lit = JSON.stringify(val);
    out.push(`${key} ${op} ${lit}`);
  }
  return out;
}

export function compileSearch(f) {
  const c = [];
  if (f.service) c.push(`resource.service.name = ${JSON.stringify(f.service)}`);
  if (f.operation) c.push(`name = ${JSON.stringify(f.operation)}`);
  c.push(...parseTags(f.tags));
  if (f.minDuration) {
    const d = durForTraceQL(f.minDuration);
    if (!d) throw new Error(`Min duration: cannot read "${f.minDuration}" (e.g. 150ms, 1.5s)`);
    c.push(`duration >= ${d}`);
  }
  if (f.maxDuration) {
    const d = durForTraceQL(f.maxDuration);
    if (!d) throw new Error(`Max duration: cannot read "${f.maxDuration}" (e.g. 150ms, 1.5s)`);
    c.push(`duration <= ${d}`);
  }
  return c.length ? `{ ${c.join(' && ')} }` : '{}';
}

const tagCache = new Map();
function cached(key, fn) {
  const k = getTenant() + '\u0000' + key;
  if (!tagCache.has(k)) tagCache.set(k, fn().catch(e => { tagCache.delete(k); throw e; }));
  return tagCache.get(k);
}
function tagNames(scope) {
  return cached('tags:' + scope, async () => {
    const r = await getJSON(`/api/v2/search/tags?${qs({ scope })}`);
    const out = [];
    for (const sc of r.scopes || []) for (const t of sc.tags || []) out.push({ scope: sc.name, tag: t });
    return out;
  });
}
function tagValues(name, q) {
  return cached(`vals:${name}:${q || ''}`, async () => {
    const r = await getJSON(`/api/v2/search/tag/${encodeURIComponent(name)}/values?${qs({ q })}`);
    return (r.tagValues || []).map(v => ({ type: v.type, value: String(v.value) }));
  });
}

function searchPage(root, args, params, signal) {
  const mode = params.q !== undefined && !params.service && !params.operation ? 'traceql' : (params.mode === 'traceql' ? 'traceql' : 'form');
  const range0 = resolveRange(params);
  const listId = 'svc-list', opId = 'op-list';
  const f = {
    service: h('input', { name: 'service', list: listId, value: params.service || '', placeholder: 'All services', autocomplete: 'off' }),
    operation: h('input', { name: 'operation', list: opId, value: params.operation || '', placeholder: 'All operations', autocomplete: 'off' }),
    tags: h('input', { name: 'tags', value: params.tags || '', placeholder: 'http.response.status_code=500 error="a b"', autocomplete: 'off', spellcheck: 'false' }),
    minDuration: h('input', { name: 'minDuration', value: params.minDuration || '', placeholder: 'e.g. 100ms' }),
    maxDuration: h('input', { name: 'maxDuration', value: params.maxDuration || '', placeholder: 'e.g. 2s' }),
    limit: h('input', { name: 'limit', type: 'number', min: 1, max: 10000, value: params.limit || '20' }),
  };
  const svcList = h('datalist', { id: listId }), opList = h('datalist', { id: opId });
  const rp = rangePicker(range0);
  const compiled = h('code');
  const formErr = h('div');
  const ql = traceqlEditor(params.q !== undefined ? params.q : '', () => submit());

  const formTab = h('div.form-tab',
    h('label', 'Service'), f.service, svcList,
    h('label', 'Operation (span name)'), f.operation, opList,
    h('label', 'Tags ', h('span.muted', '(key=value, space separated)')), f.tags,
    h('div.pair', h('div', h('label', 'Min duration'), f.minDuration), h('div', h('label', 'Max duration'), f.maxDuration)),
    h('div.compiled', 'TraceQL: ', compiled));
  const qlTab = h('div.ql-tab', h('label', 'TraceQL ', h('span.muted', '(Enter runs, Shift+Enter new line)')), ql.el);
  const tabBtn = (m, label) => h('button', { type: 'button', 'data-mode': m, onclick: () => setMode(m) }, label);
  const tabs = h('div.tabs', tabBtn('form', 'Form'), tabBtn('traceql', 'TraceQL'));
  let curMode = mode;
  function setMode(m) {
    if (m === 'traceql' && curMode === 'form' && !ql.input.value.trim()) {
      try { ql.input.value = compileSearch(readForm()); } catch { /* leave empty */ }
    }
    curMode = m;
    formTab.style.display = m === 'form' ? '' : 'none';
    qlTab.style.display = m === 'traceql' ? '' : 'none';
    for (const b of tabs.children) b.classList.toggle('active', b.dataset.mode === m);
  }
  const readForm = () => ({ service: f.service.value.trim(), operation: f.operation.value.trim(), tags: f.tags.value.trim(),
    minDuration: f.minDuration.value.trim(), maxDuration: f.maxDuration.value.trim() });
  const updateCompiled = () => {
    try { compiled.textContent = compileSearch(readForm()); formErr.replaceChildren(); }
    catch (e) { compiled.textContent = '–'; formErr.replaceChildren(h('div.error-box', e.message)); }
  };
  for (const k of ['service', 'operation', 'tags', 'minDuration', 'maxDuration']) f[k].addEventListener('input', updateCompiled);
  updateCompiled();

  function submit() {
    const r = rp.get();
    if (r.range === undefined && (!isFinite(r.start) || !isFinite(r.end) || r.end <= r.start)) {
      formErr.replaceChildren(h('div.error-box', 'Custom range: pick a start before the end.'));
      return;
    }
    const p = { ...r, limit: f.limit.value };
    if (curMode === 'form') {
      const fv = readForm();
      try { compileSearch(fv); } catch (e) { formErr.replaceChildren(h('div.error-box', e.message)); return; }
      Object.assign(p, fv);
    } else {
      p.q = ql.input.value.trim() || '{}';
    }
    navigate('#/search?' + qs(p));
  }

  const form = h('form.panel.search-form', { autocomplete: 'off', onsubmit: e => { e.preventDefault(); submit(); } },
    tabs, formTab, qlTab,
    h('label', 'Time range'), rp.el,
    h('label', 'Limit'), f.limit,
    h('div.actions', h('button.primary', { type: 'submit', id: 'run-search' }, 'Find traces')),
    formErr);
  setMode(mode);
  const results = h('div.results');
  root.append(h('div.search-layout', form, results));

  // fill service and operation suggestions
  tagValues('resource.service.name').then(vs => svcList.replaceChildren(...vs.map(v => h('option', { value: v.value })))).catch(() => {});
  const loadOps = debounce(() => {
    const svc = f.service.value.trim();
    const q = svc ? `{resource.service.name=${JSON.stringify(svc)}}` : undefined;
    tagValues('name', q).then(vs => opList.replaceChildren(...vs.slice(0, 500).map(v => h('option', { value: v.value })))).catch(() => {});
  }, 250);
  f.service.addEventListener('input', loadOps);
  loadOps();

  const hasQuery = ['q', 'service', 'operation', 'tags', 'minDuration', 'maxDuration', 'range', 'start'].some(k => params[k] !== undefined);
  if (!hasQuery) {
    results.append(h('div.panel.empty', 'Pick a service or write a TraceQL query, then ', h('b', 'Find traces'), '.'));
    return;
  }
  let q;
  try { q = params.q !== undefined && curMode === 'traceql' ? params.q : compileSearch(params); }
  catch (e) { results.append(errorBox(e)); return; }
  runSearch(results, q, range0, params.limit || 20, signal, params.sort);
}

// Runs the search over /api/search/stream (NDJSON: one Tempo SearchResponse per line as blocks complete, or a last
// line {"error": ...}) and draws the merged results as they arrive, with the blocks done so far.
function runSearch(results, q, range, limit, signal, sort0) {
  const t0 = performance.now();
  const lim = Math.max(1, parseInt(limit, 10) || 20);
  const ctl = new AbortController();
  signal.addEventListener('abort', () => ctl.abort());
  const elapsed = h('span.elapsed', '0.0 s');
  const fill = h('span');
  const pbar = h('span.pbar', { role: 'progressbar', 'aria-label': 'Blocks searched', 'aria-valuemin': 0, 'aria-valuemax': 1, 'aria-valuenow': 0 }, fill);
  const blocks = h('span.blocks', { id: 'search-blocks' }, 'waiting for the first block…');
  const spinner = h('span.spinner');
  const label = h('b.state', 'Searching…');
  const cancel = h('button', { type: 'button', id: 'search-cancel', onclick: () => ctl.abort() }, 'Cancel');
  const params = qs({ q, limit: lim, start: range.start, end: range.end, spss: 3 });
  const progress = h('div.panel.search-progress', { id: 'search-progress', 'data-search-state': 'running', 'data-params': params, role: 'status' },
    h('div.row', spinner, label, elapsed, pbar, blocks, h('span.grow'), cancel),
    h('div.muted.mono.query', q));
  const errSlot = h('div');
  const found = new Map(); // traceID -> view model; lines never repeat a trace, a repeat replaces
  let metrics = {}, streamError = null;
  const view = resultsView(q, range, lim, sort0);
  const tick = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
  const timer = setInterval(() => { elapsed.textContent = tick(); }, 100);

  function showProgress() {
    const done = +(metrics.completedJobs || 0), total = +(metrics.totalJobs || 0);
    if (total) {
      blocks.textContent = `${done} of ${total} block${total === 1 ? '' : 's'}`;
      fill.style.width = `${(100 * Math.min(1, done / total)).toFixed(1)}%`;
      pbar.setAttribute('aria-valuenow', (done / total).toFixed(3));
    }
  }
  // newest first by start (nanoseconds), ties by trace ID, as /api/search orders them; then the limit
  const merged = () => [...found.values()].sort((a, b) => (a.startNs < b.startNs ? 1 : a.startNs > b.startNs ? -1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0)).slice(0, lim);
  // redraws at most every 100 ms, less often when drawing itself is slow
  let pending = null, last = 0, cost = 0;
  function draw(final) {
    if (pending) { clearTimeout(pending); pending = null; }
    const a = performance.now();
    showProgress();
    view.update(merged(), { final, secs: (a - t0) / 1000, metrics });
    if (!view.el.isConnected) results.append(view.el);
    last = performance.now(); cost = last - a;
  }
  function schedule() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; draw(false); }, Math.max(0, last + Math.max(100, 4 * cost) - performance.now()));
  }
  function onLine(text) {
    let o;
    try { o = JSON.parse(text); } catch { streamError = `unreadable line from the server: ${text.slice(0, 120)}`; return; }
    if (o.error !== undefined) { streamError = String(o.error); return; }
    for (const t of o.traces || []) found.set(t.traceID, traceView(t));
    if (o.metrics) metrics = o.metrics;
    schedule();
  }
  function finish(state, text) {
    clearInterval(timer);
    elapsed.textContent = tick();
    progress.dataset.searchState = state;
    label.textContent = text;
    spinner.remove();
    cancel.remove();
    if (state === 'done') { fill.style.width = '100%'; pbar.setAttribute('aria-valuenow', 1); }
    draw(true);
  }

  results.replaceChildren(progress, errSlot);
  let started = false;
  (async () => {
    const res = await request(`/api/search/stream?${params}`,
      { signal: ctl.signal, headers: { Accept: 'application/x-ndjson' } });
    started = true;
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) onLine(line);
      }
    }
    buf += dec.decode();
    if (buf.trim()) onLine(buf.trim());
  })().then(() => {
    if (streamError) {
      errSlot.replaceChildren(h('div.search-error', errorBox(new Error(streamError), q)));
      finish('error', found.size ? 'Search failed; partial results below' : 'Search failed');
    } else finish('done', 'Done');
  }, e => {
    if (signal.aborted) { clearInterval(timer); if (pending) clearTimeout(pending); return; } // navigated away
    if (e.name === 'AbortError') { finish('cancelled', found.size ? 'Search cancelled; partial results below' : 'Search cancelled'); return; }
    if (!started) { // failed before streaming: the server's message, with the caret
      clearInterval(timer);
      if (pending) clearTimeout(pending);
      results.replaceChildren(h('div.search-error', errorBox(e, q)));
      return;
    }
    errSlot.replaceChildren(h('div.search-error', errorBox(e, q)));
    finish('error', 'Search failed; partial results below');
  });
}

// One search result (Tempo TraceSearchMetadata) -> what the list and the plot show.
function traceView(t) {
  const sets = t.spanSets || (t.spanSet ? [t.spanSet] : []);
  let errors = 0, spans = 0;
  for (const st of Object.values(t.serviceStats || {})) { errors += st.errorCount || 0; spans += st.spanCount || 0; }
  let startNs = 0n;
  try { startNs = BigInt(t.startTimeUnixNano || '0'); } catch { /* keep 0 */ }
  return {
    id: t.traceID, key: String(t.traceID).toLowerCase().padStart(32, '0'), rootService: t.rootServiceName, rootName: t.rootTraceName,
    startNs, startMs: Number(startNs / 1000000n), durMs: t.durationMs || 0,
    matched: sets.reduce((a, x) => a + (x.matched || 0), 0), stats: t.serviceStats || {}, errors, spans,
  };
}

// The results panel: count, compare button, sort, scatter plot and list; update() redraws it with the traces so far
// (keeping the chosen sort and the traces picked for compare).
function resultsView(q, range, limit, sort0) {
  const sortSel = h('select', { 'aria-label': 'Sort results' },
    [['recent', 'Most recent'], ['longest', 'Longest first'], ['shortest', 'Shortest first'], ['spans', 'Most matched spans']]
      .map(([k, l]) => h('option', { value: k, selected: k === (sort0 || 'recent') }, l)));
  const cmpBtn = h('button', { type: 'button', id: 'compare-selected', disabled: true }, 'Compare selected');
  const picked = [];
  cmpBtn.addEventListener('click', () => { if (picked.length === 2) navigate(`#/compare/${picked[0]}/${picked[1]}`); });
  const count = h('b', { id: 'result-count' }), info = h('span.muted');
  const body = h('div');
  const el = h('div.panel', { id: 'search-results' }, h('div.results-head', count, info, h('span.grow'), cmpBtn, sortSel), body);
  let traces = [], plot = null, table = null;

  function renderRows() {
    if (!table) return;
    const k = sortSel.value;
    const sorted = k === 'recent' ? traces : traces.slice().sort(k === 'longest' ? (a, b) => b.durMs - a.durMs
      : k === 'shortest' ? (a, b) => a.durMs - b.durMs : (a, b) => b.matched - a.matched);
    const maxDur = Math.max(1, ...traces.map(t => t.durMs));
    table.replaceChildren(h('thead', h('tr', h('th', ''), h('th', 'Trace'), h('th', 'Start'), h('th.num', 'Duration'), h('th.num', 'Matched'), h('th', 'Services'))),
      h('tbody', sorted.map(t => {
        const cb = h('input', { type: 'checkbox', 'data-trace-id': t.id, checked: picked.includes(t.id), 'aria-label': 'Select for compare' });
        cb.addEventListener('change', () => {
          const i = picked.indexOf(t.id);
          if (cb.checked && i < 0) picked.push(t.id);
          if (!cb.checked && i >= 0) picked.splice(i, 1);
          while (picked.length > 2) {
            const old = picked.shift();
            const o = table.querySelector(`input[data-trace-id="${old}"]`);
            if (o) o.checked = false;
          }
          cmpBtn.disabled = picked.length !== 2;
        });
        return h('tr', { 'data-trace-id': t.id },
          h('td', cb),
          h('td', h('a.trace-link', { href: `#/trace/${t.id}` },
            h('span.dot', { style: { background: colourOf(t.rootService || '?'), marginRight: '6px' } }),
            h('span.trace-title', t.rootService ? `${t.rootService}: ${t.rootName || ''}` : '(root span not received)')),
            t.errors ? h('span.badge-err', { style: { marginLeft: '6px' } }, `${t.errors} err`) : null,
            h('div.trace-id', t.id)),
          h('td.nowrap', fmtTime(t.startMs), h('div.muted', fmtAgo(t.startMs))),
          h('td.num', t.durMs ? fmtDur(t.durMs * 1e6) : '<1 ms', h('div.durbar', h('span', { style: { width: `${(100 * t.durMs / maxDur).toFixed(1)}%` } }))),
          h('td.num', String(t.matched)),
          h('td', h('div.legend', Object.entries(t.stats).map(([svc, st]) =>
            h('span.chip' + (st.errorCount ? '.err' : ''), { title: `${st.spanCount || 0} spans${st.errorCount ? `, ${st.errorCount} errors` : ''}` },
              h('span.dot', { style: { background: colourOf(svc) } }), `${svc} ${st.spanCount || 0}`)))));
      })));
  }
  sortSel.addEventListener('change', renderRows);

  function update(list, { final, secs, metrics: m }) {
    traces = list;
    for (let i = picked.length - 1; i >= 0; i--) if (!list.some(t => t.id === picked[i])) picked.splice(i, 1);
    cmpBtn.disabled = picked.length !== 2;
    count.textContent = `${list.length} trace${list.length === 1 ? '' : 's'}${final ? '' : ' so far'}`;
    info.textContent = [final && `in ${secs.toFixed(2)} s`, m.inspectedTraces && `${m.inspectedTraces} inspected`, list.length >= limit && 'limit reached']
      .filter(Boolean).join(' · ');
    if (!list.length) {
      plot = table = null;
      if (!final) { body.replaceChildren(h('div.empty', 'No traces yet…')); return; }
      const again = latestButton('search-latest', end => {
        const p = Object.fromEntries(new URLSearchParams(location.hash.split('?')[1] || ''));
        delete p.range;
        navigate('#/search?' + qs({ ...p, start: end - 3600, end }));
      });
      body.replaceChildren(h('div.empty', 'No traces matched in ', fmtTime(range.start * 1000, false), ' – ', fmtTime(range.end * 1000, false), '. ', again,
        h('div.muted.mono', { style: { marginTop: '6px' } }, q)));
      return;
    }
    const next = scatter(list);
    if (!table) { table = h('table.list', { id: 'results-table' }); body.replaceChildren(next, table); } else plot.replaceWith(next);
    plot = next;
    renderRows();
  }
  return { el, update };
}

// Duration over time scatter plot: one circle per trace, click opens it.
function scatter(traces) {
  const W = Math.max(400, (document.querySelector('.results')?.clientWidth || 800) - 30), H = 190;
  const L = 56, R = 12, T = 10, B = 24;
  let x0 = Math.min(...traces.map(t => t.startMs)), x1 = Math.max(...traces.map(t => t.startMs));
  if (x1 - x0 < 1000) { x0 -= 500; x1 += 500; }
  const durs = traces.map(t => t.durMs).sort((a, b) => a - b);
  const y1 = Math.max(1, durs[durs.length - 1]) * 1.1;
  // a log scale when a few slow traces would squash the rest against the axis
  const median = Math.max(0.5, durs[durs.length >> 1]);
  const log = y1 / median > 20;
  const lo = Math.max(0.1, Math.min(...durs.filter(d => d > 0), median) / 2), lhi = Math.log10(y1), llo = Math.log10(lo);
  const X = v => L + (v - x0) / (x1 - x0) * (W - L - R);
  const Y = log ? v => H - B - (Math.log10(Math.max(v, lo)) - llo) / (lhi - llo) * (H - T - B) : v => H - B - v / y1 * (H - T - B);
  const svg = s('svg', { class: 'scatter', id: 'scatter', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': 'Duration over time', 'data-scale': log ? 'log' : 'linear' });
  const axis = s('g', { class: 'axis' });
  const yt = log ? [] : [0, 1, 2, 3, 4].map(i => y1 * i / 4);

  if (log) for (let e = Math.floor(llo); e <= Math.ceil(lhi); e++) for (const k of lhi - llo > 2.5 ? [1] : [1, 2, 5]) {
    const v = k * 10 ** e;
    if (v >= lo && v <= y1) yt.push(v);
  }
  if (log) axis.append(s('text', { x: 2, y: H - 6, 'font-style': 'italic' }, 'log scale'));
  for (const v of yt) {
    const y = Y(v);
    axis.append(s('line', { x1: L, x2: W - R, y1: y, y2: y }), s('text', { x: L - 6, y: y + 3, 'text-anchor': 'end' }, fmtDur(v * 1e6)));
  }
  const sameDay = new Date(x0).toDateString() === new Date(x1).toDateString();
  for (let i = 0; i <= 4; i++) {
    const v = x0 + (x1 - x0) * i / 4;
    const label = sameDay ? fmtTime(v, x1 - x0 < 10000).slice(11) : fmtTime(v, false).slice(5, 16);
    axis.append(s('text', { x: X(v), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle' }, label));
  }
  svg.append(axis);
  const maxSpans = Math.max(1, ...traces.map(t => t.spans));
  for (const t of traces) {
    const r = 3.5 + 5 * Math.sqrt(t.spans / maxSpans);
    svg.append(s('circle', { cx: X(t.startMs).toFixed(1), cy: Y(t.durMs).toFixed(1), r: r.toFixed(1), 'data-trace-id': t.id,
      fill: t.errors ? '#d64545' : colourOf(t.rootService || '?'), onclick: () => navigate(`#/trace/${t.id}`) },
      s('title', {}, `${t.rootService || '?'}: ${t.rootName || ''}\n${fmtTime(t.startMs)} · ${t.durMs} ms${t.errors ? ` · ${t.errors} errors` : ''}`)));
  }
  return svg;
}

// TraceQL text box with completion of attribute names (after ".", "span.", "resource.") and values (after "=").
function traceqlEditor(value, onSubmit) {
  const input = h('textarea', { id: 'traceql', spellcheck: 'false', rows: 4, placeholder: '{ resource.service.name = "cart" && duration > 100ms }' });
  input.value = value;
  const box = h('div.ac', { style: { display: 'none' }, role: 'listbox' });
  const el = h('div.traceql', input, box);
  let items = [], sel = 0, ctx = null, seq = 0;
  const close = () => { box.style.display = 'none'; items = []; ctx = null; };
  function show(list, c) {
    items = list.slice(0, 200); ctx = c; sel = 0;
    if (!items.length) { close(); return; }
    box.replaceChildren(...items.map((it, i) => h('div', { 'data-i': i, class: i === 0 ? 'sel' : '', onmousedown: e => { e.preventDefault(); accept(i); } }, it.label)));
    box.style.display = '';
  }
  function accept(i) {
    const it = items[i];
    if (!it || !ctx) return;
    const v = input.value;
    input.value = v.slice(0, ctx.from) + it.insert + v.slice(ctx.to);
    const caret = ctx.from + it.insert.length;
    input.setSelectionRange(caret, caret);
    close();
    input.focus();
    if (it.again) suggest();
  }
  async function suggest() {
    const my = ++seq;
    const caret = input.selectionStart, v = input.value, before = v.slice(0, caret);
    let m;
    const open = (before.match(/\{/g) || []).length > (before.match(/\}/g) || []).length;
    if (!open) { close(); return; }
    if ((m = /(?:^|[\s{(&|!])((span|resource)?\.([\w.\-]*))$/.exec(before))) {
      const scope = m[2] || '';
      const all = await (scope ? tagNames(scope) : Promise.all([tagNames('span'), tagNames('resource')]).then(a => a.flat())).catch(() => []);
      if (my !== seq) return;
      const pre = m[3], seen = new Set(), list = [];
      for (const t of all) {
        if (!t.tag.startsWith(pre) || seen.has(t.tag)) continue;
        seen.add(t.tag);
        const ins = (scope ? scope + '.' : '.') + t.tag;
        list.push({ label: ins + (scope ? '' : `  (${t.scope})`), insert: ins });
      }
      show(list, { from: caret - m[1].length, to: caret });
    } else if ((m = /((?:span|resource)?\.[\w.\-]+|[a-zA-Z:]+)\s*(=|!=|=~|!~)\s*("?)([^"\s&|}]*)$/.exec(before))) {
      const name = m[1], typed = m[4];
      const vals = await tagValues(name).catch(() => []);
      if (my !== seq) return;
      const list = vals.filter(x => x.value.toLowerCase().includes(typed.toLowerCase()))
        .map(x => ({ label: x.value, insert: x.type === 'string' ? JSON.stringify(x.value) : x.value }));
      show(list, { from: caret - m[3].length - m[4].length, to: caret + (m[3] && v[caret] === '"' ? 1 : 0) });
    } else if ((m = /(?:[{(&|]\s*)([a-zA-Z:]+)$/.exec(before))) {
      const pre = m[1];
      const list = ['span.', 'resource.', ...INTRINSICS].filter(x => x.startsWith(pre) && x !== pre)
        .map(x => ({ label: x, insert: x, again: x.endsWith('.') }));
      show(list, { from: caret - pre.length, to: caret });
    } else close();
  }
  const suggestSoon = debounce(suggest, 60);
  input.addEventListener('input', suggestSoon);
  input.addEventListener('click', suggestSoon);
  input.addEventListener('blur', () => setTimeout(close, 150));
  input.addEventListener('keydown', e => {
    if (items.length) {
      if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
        e.preventDefault();
        box.children[sel]?.classList.remove('sel');
        sel = (sel + (e.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length;
        box.children[sel].classList.add('sel');
        box.children[sel].scrollIntoView({ block: 'nearest' });
        return;
      }
      if (e.key === 'Enter' || e.key === 'Tab') { e.preventDefault(); accept(sel); return; }
      if (e.key === 'Escape') { e.preventDefault(); close(); return; }
    }
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); close(); onSubmit(); }
  });
  return { el, input };
}

// ---------------------------------------------------------------- service graph

function graphPage(root, args, params, signal) {
  const range = resolveRange(params);
  const rp = rangePicker(range);
  const out = h('div');
  const apply = () => {
    const r = rp.get();
    if (r.range === undefined && !(r.end > r.start)) return;
    navigate('#/graph?' + qs(r));
  };
  rp.sel.addEventListener('change', () => { if (rp.sel.value !== 'custom') apply(); });
  root.append(h('div.panel', { style: { marginBottom: '12px' } },
    h('div.row', h('h1', 'Service graph'), h('span.grow'), rp.el, h('button.primary', { type: 'button', id: 'graph-apply', onclick: apply }, 'Show')),
    h('div.muted', { style: { marginTop: '4px' } }, `Calls between services (a span whose parent span belongs to another service), ${fmtTime(range.start * 1000, false)} – ${fmtTime(range.end * 1000, false)}.`)),
    out);
  out.append(h('div.panel.loading', h('span.spinner'), 'Querying…'));
  const lo = BigInt(range.start) * 1000000000n, hi = BigInt(range.end) * 1000000000n;
  const edgesQ = `SELECT p.service_name AS parent, c.service_name AS child, count(*) AS calls, sum(CASE WHEN c.status_code=2 THEN 1 ELSE 0 END) AS errors FROM spans c JOIN spans p ON c.trace_id=p.trace_id AND c.parent_span_id=p.span_id WHERE p.service_name<>c.service_name AND c.start_unix_nano >= ${lo} AND c.start_unix_nano < ${hi} GROUP BY 1,2`;
  const nodesQ = `SELECT service_name AS service, count(*) AS spans, sum(CASE WHEN status_code=2 THEN 1 ELSE 0 END) AS errors FROM spans WHERE start_unix_nano >= ${lo} AND start_unix_nano < ${hi} GROUP BY 1`;
  Promise.all([sql(edgesQ, signal), sql(nodesQ, signal)]).then(([edges, nodes]) => {
    out.replaceChildren();
    if (!edges.length && !nodes.length) {
      const jump = latestButton('graph-latest', end => navigate('#/graph?' + qs({ start: end - 3600, end })), signal);
      out.append(h('div.panel.empty', 'No spans in this window. ', jump));
      return;
    }
    out.append(drawGraph(edges, nodes, range), edgeTable(edges, range));
  }).catch(e => { if (e.name !== 'AbortError') out.replaceChildren(errorBox(e)); });
}

function rateColour(rate) {
  if (!rate) return '#8796ad';
  const t = Math.min(1, 0.25 + rate * 5);
  const mix = (a, b) => Math.round(a + (b - a) * t);
  return `rgb(${mix(135, 214)},${mix(150, 40)},${mix(173, 40)})`;
}

function drawGraph(edges, nodeRows, range) {
  const names = new Set([...nodeRows.map(n => n.service), ...edges.flatMap(e => [e.parent, e.child])]);
  const stats = new Map([...names].map(n => [n, { spans: 0, errors: 0, inCalls: 0, inErr: 0 }]));
  for (const n of nodeRows) Object.assign(stats.get(n.service), { spans: +n.spans, errors: +n.errors });
  for (const e of edges) { const st = stats.get(e.child); st.inCalls += +e.calls; st.inErr += +e.errors; }
  // layers: breadth-first distance from the callers nobody calls (cycles cannot stretch the layout)
  const out = new Map([...names].map(n => [n, []])), indeg = new Map([...names].map(n => [n, 0]));
  for (const e of edges) { out.get(e.parent).push(e.child); indeg.set(e.child, indeg.get(e.child) + 1); }
  const layer = new Map();
  const bfs = starts => {
    const q = starts.slice();
    for (const n of q) layer.set(n, 0);
    for (let i = 0; i < q.length; i++) for (const c of out.get(q[i])) if (!layer.has(c)) { layer.set(c, layer.get(q[i]) + 1); q.push(c); }
  };
  bfs([...names].filter(n => !indeg.get(n)).sort());
  for (;;) {
    const rest = [...names].filter(n => !layer.has(n));
    if (!rest.length) break;
    bfs([rest.sort((a, b) => out.get(b).length - out.get(a).length)[0]]);
  }
  const cols = [];
  for (const n of [...names].sort()) { const l = layer.get(n); (cols[l] = cols[l] || []).push(n); }
  for (let i = cols.length - 1; i >= 0; i--) if (!cols[i]) cols.splice(i, 1);
  // order each column by the mean row of its callers in earlier columns (fewer crossings)
  const rowOf = new Map(), colLen = new Map();
  cols.forEach((c, ci) => {
    if (ci > 0) {
      const key = n => {
        const rows = edges.filter(e => e.child === n && rowOf.has(e.parent)).map(e => rowOf.get(e.parent) / colLen.get(e.parent));
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 2;
      };
      const k = new Map(c.map(n => [n, key(n)]));
      c.sort((a, b) => k.get(a) - k.get(b) || (a < b ? -1 : 1));
    }
    c.forEach((n, i) => { rowOf.set(n, i + 0.5); colLen.set(n, c.length); });
  });
  const NW = 168, NH = 50, CG = 190, RG = 40, PAD = 30;
  const maxRows = Math.max(...cols.map(c => (c || []).length));
  const W = PAD * 2 + cols.length * NW + (cols.length - 1) * CG + 160, H = PAD * 2 + maxRows * NH + (maxRows - 1) * RG + 30;
  const pos = new Map();
  cols.forEach((c, ci) => (c || []).forEach((n, ri) => {
    const off = (maxRows - c.length) * (NH + RG) / 2;
    pos.set(n, { x: PAD + ci * (NW + CG), y: PAD + off + ri * (NH + RG) });
  }));
  const svg = s('svg', { class: 'graph' + (edges.length > 14 ? ' dense' : ''), id: 'service-graph', viewBox: `0 0 ${W} ${H}`, style: `max-width:${W}px` },
    s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' },
      s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#8796ad' }))));
  const maxCalls = Math.max(2, ...edges.map(e => +e.calls));
  const search = q => navigate('#/search?' + qs({ q, start: range.start, end: range.end }));
  for (const e of edges) {
    const a = pos.get(e.parent), b = pos.get(e.child);
    const rate = +e.calls ? +e.errors / +e.calls : 0;
    let d, lx, ly;
    if (b.x > a.x) {
      const x0 = a.x + NW, y0 = a.y + NH / 2, x1 = b.x - 2, y1 = b.y + NH / 2, mx = (x0 + x1) / 2;
      d = `M${x0},${y0} C${mx},${y0} ${mx},${y1} ${x1},${y1}`; lx = mx; ly = (y0 + y1) / 2;
    } else { // same or earlier column: arc out to the right of the nodes
      const x0 = a.x + NW, y0 = a.y + NH / 2 + (b.y > a.y ? 8 : -8), x1 = b.x + NW + 2, y1 = b.y + NH / 2 + (b.y > a.y ? -8 : 8);
      const bulge = 40 + Math.abs(y1 - y0) * 0.35 + (a.x - b.x) * 0.5;
      d = `M${x0},${y0} C${x0 + bulge},${y0} ${x1 + bulge},${y1} ${x1},${y1}`; lx = (x0 + x1) / 2 + bulge * 0.75; ly = (y0 + y1) / 2 + 4;
    }
    const col = rateColour(rate);
    const width = 1.2 + 4 * Math.log(+e.calls + 1) / Math.log(maxCalls + 1);
    svg.append(s('g', { class: 'edge', 'data-edge': `${e.parent}->${e.child}`, onclick: () => search(`{resource.service.name=${JSON.stringify(e.parent)}} > {resource.service.name=${JSON.stringify(e.child)}}`) },
      s('title', {}, `${e.parent} → ${e.child}: ${e.calls} calls, ${e.errors} errors`),
      s('path', { d, stroke: col, 'stroke-width': width.toFixed(1), 'stroke-opacity': .75, 'marker-end': 'url(#arrow)' }),
      s('text', { x: lx, y: ly - 4, 'text-anchor': 'middle' }, `${fmtCount(+e.calls)} calls · ${(rate * 100).toFixed(rate && rate < 0.001 ? 2 : 1)}% err`)));
  }
  for (const n of names) {
    const p = pos.get(n), st = stats.get(n);
    const errRate = st.spans ? st.errors / st.spans : 0;
    svg.append(s('g', { class: 'node' + (st.spans && st.errors / st.spans >= 0.05 ? ' err' : ''), 'data-service': n, transform: `translate(${p.x},${p.y})`, onclick: () => navigate('#/search?' + qs({ service: n, start: range.start, end: range.end })) },
      s('title', {}, `${n}: ${st.spans} spans, ${st.errors} errors`),
      s('rect', { width: NW, height: NH, rx: 8 }),
      s('rect', { width: 6, height: NH, fill: colourOf(n), rx: 3, style: 'stroke:none' }),
      s('text', { x: 16, y: 20, 'font-weight': 600 }, n),
      s('text', { x: 16, y: 37, class: 'sub' }, `${fmtCount(st.spans)} spans · `,
        s('tspan', { class: errRate ? 'errtxt' : '' }, `${(errRate * 100).toFixed(errRate && errRate < 0.001 ? 2 : 1)}% err`))));
  }
  return h('div.panel.graph-wrap', { style: { marginBottom: '12px', overflow: 'auto' } }, svg);
}
// Button that moves a page's window to the hour before the newest stored span.
function latestButton(id, go, signal) {
  const b = h('button', { type: 'button', id }, 'Use the last hour of stored data');
  b.addEventListener('click', async () => {
    try {
      const end = await latestDataEnd(signal);
      if (end === null) b.replaceWith('No data stored.'); else go(end);
    } catch (e) { if (e.name !== 'AbortError') b.replaceWith(errorBox(e)); }
  });
  return b;
}
function fmtCount(n) { return n >= 1e6 ? (n / 1e6).toFixed(1) + 'M' : n >= 1e4 ? (n / 1e3).toFixed(1) + 'k' : String(n); }

function edgeTable(edges, range) {
  const sorted = edges.slice().sort((a, b) => b.calls - a.calls);
  return h('div.panel', h('h2', 'Edges'), h('table.list', { id: 'edge-table' },
    h('thead', h('tr', h('th', 'Caller'), h('th', 'Callee'), h('th.num', 'Calls'), h('th.num', 'Errors'), h('th.num', 'Error rate'), h('th', ''))),
    h('tbody', sorted.map(e => h('tr', { 'data-edge': `${e.parent}->${e.child}` },
      h('td', h('span.dot', { style: { background: colourOf(e.parent), marginRight: '6px' } }), e.parent),
      h('td', h('span.dot', { style: { background: colourOf(e.child), marginRight: '6px' } }), e.child),
      h('td.num', String(e.calls)), h('td.num', String(e.errors)),
      h('td.num', `${(+e.calls ? 100 * e.errors / e.calls : 0).toFixed(2)}%`),
      h('td', h('a', { href: '#/search?' + qs({ q: `{resource.service.name=${JSON.stringify(e.parent)}} > {resource.service.name=${JSON.stringify(e.child)}}`, start: range.start, end: range.end }) }, 'traces')))))));
}

initHeader();
window.addEventListener('hashchange', route);
route();
