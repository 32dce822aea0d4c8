// Trace page (virtual waterfall, critical path, span details, JSON download) and trace compare page.
import { h, request, fmtDur, fmtTime, colourOf, idHex, anyValue, errorBox, debounce } from './util.js';

const ROW = 24;
const CRIT_Y = 11.5; // vertical middle of a bar in its row (see .bar, .crit in app.css)
const KINDS = { 0: 'unspecified', 1: 'internal', 2: 'server', 3: 'client', 4: 'producer', 5: 'consumer' };
const STATUS = { 0: 'unset', 1: 'ok', 2: 'error' };
const kindName = k => typeof k === 'string' ? k.replace(/^SPAN_KIND_/, '').toLowerCase() : (KINDS[k] || String(k ?? 'unspecified'));
const statusName = c => typeof c === 'string' ? c.replace(/^STATUS_CODE_/, '').toLowerCase() : (STATUS[c] || 'unset');
const big = v => { try { return BigInt(v || 0); } catch { return 0n; } };

// ---------------------------------------------------------------- model

// OTLP JSON (as /api/v2/traces/<id> returns it) -> flat span list with a tree over it.
// Times are Number nanoseconds relative to the earliest span start (baseNs, a BigInt).
export function buildModel(json) {
  const t = json.trace || json;
  const rss = t.resourceSpans || t.batches || [];
  const spans = [];
  let baseNs = null;
  for (const rs of rss) {
    const resAttrs = (rs.resource && rs.resource.attributes) || [];
    const svcAttr = resAttrs.find(a => a.key === 'service.name');
    const service = svcAttr ? anyValue(svcAttr.value) : 'unknown';
    for (const ss of rs.scopeSpans || rs.instrumentationLibrarySpans || []) {
      const scope = ss.scope || ss.instrumentationLibrary || {};
      for (const sp of ss.spans || []) {
        const st = big(sp.startTimeUnixNano), en = big(sp.endTimeUnixNano);
        if (baseNs === null || st < baseNs) baseNs = st;
        spans.push({ raw: sp, service, resAttrs, scope, stBig: st, enBig: en < st ? st : en,
          id: idHex(sp.spanId, 8), parentId: idHex(sp.parentSpanId, 8), name: sp.name || '',
          error: statusName(sp.status && sp.status.code) === 'error' });
      }
    }
  }
  if (baseNs === null) baseNs = 0n;
  const byId = new Map();
  for (const s of spans) {
    s.start = Number(s.stBig - baseNs); s.end = Number(s.enBig - baseNs); s.dur = s.end - s.start;
    s.children = []; s.parent = null;
    if (!byId.has(s.id)) byId.set(s.id, s);
  }
  const roots = [];
  for (const s of spans) {
    const p = s.parentId && byId.get(s.parentId);
    if (p && p !== s) { s.parent = p; p.children.push(s); } else roots.push(s);
  }
  const byStart = (a, b) => a.start - b.start || a.end - b.end || (a.name < b.name ? -1 : 1);
  roots.sort(byStart);
  for (const s of spans) if (s.children.length > 1) s.children.sort(byStart);
  // pre-order (iterative: traces can be deep), depth, subtree sizes; cycles are broken by the visited set
  const order = [];
  const seen = new Set();
  const stack = roots.slice().reverse().map(r => [r, 0]);
  while (stack.length) {
    const [s, d] = stack.pop();
    if (seen.has(s)) continue;
    seen.add(s);
    s.depth = d; s.idx = order.length; order.push(s);
    for (let i = s.children.length - 1; i >= 0; i--) stack.push([s.children[i], d + 1]);
  }
  for (const s of spans) if (!seen.has(s)) { s.depth = 0; s.idx = order.length; order.push(s); roots.push(s); s.parent = null; }
  const size = new Int32Array(order.length).fill(1);
  for (let i = order.length - 1; i >= 0; i--) { const p = order[i].parent; if (p) size[p.idx] += size[i]; }
  order.forEach((s, i) => { s.size = size[i]; });
  let end = 0;
  for (const s of spans) if (s.end > end) end = s.end;
  const services = new Map();
  for (const s of spans) {
    const v = services.get(s.service) || { spans: 0, errors: 0 };
    v.spans++; if (s.error) v.errors++;
    services.set(s.service, v);
  }
  const main = roots.filter(r => !r.parentId).sort((a, b) => b.dur - a.dur)[0] || roots[0];
  return { spans, order, roots, main, byId, baseNs, duration: end, services, maxDepth: Math.max(0, ...order.map(s => s.depth)) };
}

// Critical path: from the root's end walk back through the last-finishing child that ends at or before the cursor
// (children overrunning their parent are clipped to it), recursively; the parent owns the time its path child does
// not cover. Children still running at the cursor ran in parallel with the path and are skipped.
// Returns { segs: Map span -> [[from, to], ...] (own time on the path, newest first),
//           within: Map span -> [from, to] (the contiguous stretch the path spends in the span's subtree) }.
export function criticalPath(root) {
  const segs = new Map(), within = new Map();
  if (!root) return { segs, within };
  const add = (s, a, b) => { if (b > a) { let l = segs.get(s); if (!l) segs.set(s, l = []); l.push([a, b]); } };
  const frame = (s, lo, t) => {
    within.set(s, [lo, t]);
    return { s, lo, t, kids: s.children.slice().sort((a, b) => b.end - a.end || b.start - a.start), i: 0 };
  };
  const stack = [frame(root, root.start, root.end)];
  while (stack.length) {
    const f = stack[stack.length - 1];
    let next = null, ce = 0, cs = 0;
    while (f.i < f.kids.length) {
      const c = f.kids[f.i++];
      ce = Math.min(c.end, f.s.end);
      if (ce > f.t || c.start > ce || within.has(c)) continue;
      if (ce <= f.lo) { f.i = f.kids.length; break; } // sorted by end: the rest end before the span's stretch
      cs = Math.max(c.start, f.lo);
      next = c;
      break;
    }
    if (next) {
      add(f.s, ce, f.t);
      f.t = cs;
      stack.push(frame(next, cs, ce));
    } else {
      add(f.s, f.lo, f.t);
      stack.pop();
    }
  }
  return { segs, within };
}

// Start of the longest part of [s.start, s.end] not covered by the given stretches.
function freeStart(s, covered) {
  let best = s.start, bestLen = -1, at = s.start;
  for (const [a, b] of covered.slice().sort((x, y) => x[0] - y[0])) {
    if (a - at > bestLen) { best = at; bestLen = a - at; }
    at = Math.max(at, b);
  }
  if (s.end - at > bestLen) best = at;
  return best;
}

async function loadTrace(id, signal) {
  const res = await request(`/api/v2/traces/${encodeURIComponent(id)}`, { signal });
  const text = await res.text();
  return { text, json: JSON.parse(text) };
}

// ---------------------------------------------------------------- virtual list

// Renders only the rows in view (plus a margin) into an absolutely positioned spacer.
function virtualList(scroller, spacer, renderRow, signal) {
  let count = 0, cache = new Map(), pending = false;
  function draw() {
    pending = false;
    const top = scroller.scrollTop, ht = scroller.clientHeight || 800;
    const first = Math.max(0, Math.floor(top / ROW) - 15), last = Math.min(count, Math.ceil((top + ht) / ROW) + 15);
    const next = new Map(), frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      let el = cache.get(i);
      if (el) cache.delete(i);
      else { el = renderRow(i); el.style.top = `${i * ROW}px`; frag.append(el); }
      next.set(i, el);
    }
    for (const el of cache.values()) el.remove();
    spacer.append(frag);
    cache = next;
  }
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(draw); } };
  scroller.addEventListener('scroll', schedule, { passive: true });
  const ro = new ResizeObserver(schedule);
  ro.observe(scroller);
  if (signal) signal.addEventListener('abort', () => ro.disconnect());
  return {
    setCount(n) { count = n; spacer.style.height = `${n * ROW}px`; this.refresh(); },
    refresh() { for (const el of cache.values()) el.remove(); cache.clear(); draw(); },
    scrollTo(i) {
      const top = i * ROW, ht = scroller.clientHeight;
      if (top < scroller.scrollTop || top + ROW > scroller.scrollTop + ht) scroller.scrollTop = Math.max(0, top - ht / 3);
      draw();
    },
  };
}

function axisHead(label, dur, extra) {
  const ax = h('div.wf-axis');
  for (let i = 0; i <= 4; i++) ax.append(h('span', { style: { left: `${i * 25}%` } }, fmtDur(dur * i / 4)));
  return h('div.wf-head', h('div.namecol', label), extra || null, ax);
}

// ---------------------------------------------------------------- trace page

export function tracePage(root, args, params, signal) {
  const id = (args[0] || '').trim();
  root.className = 'fill';
  if (!id) { root.append(h('div.empty', 'No trace ID given.')); return; }
  const status = h('div.panel.loading', h('span.spinner'), `Loading trace ${id}…`);
  root.append(status);
  performance.mark('strata:trace-fetch-start');
  loadTrace(id, signal).then(({ text, json }) => {
    if (signal.aborted) return;
    performance.mark('strata:trace-fetched');
    const m = buildModel(json);
    if (!m.spans.length) { status.replaceWith(h('div.panel.empty', `Trace ${id} has no spans.`)); return; }
    status.remove();
    renderTrace(root, id, m, text, params, signal);
  }).catch(e => {
    if (e.name === 'AbortError') return;
    status.replaceWith(e.status === 404 ? h('div.error-box', { role: 'alert' }, `Trace ${id} was not found.`) : errorBox(e));
  });
}

function renderTrace(root, id, m, rawText, params, signal) {
  const { segs: crit, within: critWithin } = criticalPath(m.main);
  const critTotal = [...crit.values()].flat().reduce((a, [x, y]) => a + y - x, 0);
  const rootSpan = m.main;
  const errors = m.spans.filter(s => s.error).length;
  const startMs = Number(m.baseNs / 1000000n);
  const svcChips = [...m.services.entries()].sort((a, b) => b[1].spans - a[1].spans).map(([n, v]) =>
    h('span.chip' + (v.errors ? '.err' : ''), { title: `${v.spans} spans, ${v.errors} errors` }, h('span.dot', { style: { background: colourOf(n) } }), `${n} ${v.spans}`));
  const blobUrl = URL.createObjectURL(new Blob([rawText], { type: 'application/json' }));
  signal.addEventListener('abort', () => URL.revokeObjectURL(blobUrl));
  root.append(h('div.trace-header', { id: 'trace-header' },
    h('span.title', h('span.dot', { style: { background: colourOf(rootSpan.service), marginRight: '8px', width: '12px', height: '12px' } }),
      `${rootSpan.service}: ${rootSpan.name}`),
    h('span.kv', 'Trace ', h('b.mono', id)),
    h('span.kv', 'Start ', h('b', fmtTime(startMs))),
    h('span.kv', 'Duration ', h('b', { id: 'trace-duration' }, fmtDur(m.duration))),
    h('span.kv', 'Spans ', h('b', { id: 'trace-span-count' }, String(m.spans.length))),
    h('span.kv', 'Depth ', h('b', String(m.maxDepth + 1))),
    errors ? h('span.kv', 'Errors ', h('b', { style: { color: 'var(--err)' } }, String(errors))) : null,
    h('span.kv', 'Services ', h('b', String(m.services.size))),
    h('div.legend', { style: { flexBasis: '100%' } }, svcChips)));

  // state: collapsed set (by pre-order index) -> visible rows computed by skipping subtrees
  const collapsed = new Uint8Array(m.order.length);
  let visible = [];
  const rowOf = new Int32Array(m.order.length); // pre-order index -> visible row, -1 when hidden
  let selected = null, matches = null;
  function computeVisible() {
    const out = [];
    const o = m.order;
    rowOf.fill(-1);
    for (let i = 0; i < o.length;) { rowOf[i] = out.length; out.push(o[i]); i += collapsed[i] ? o[i].size : 1; }
    visible = out;
  }
  const D = m.duration || 1;
  const pct = v => `${(100 * v / D).toFixed(3)}%`;
  function renderRow(i) {
    const s = visible[i];
    const hasKids = s.children.length > 0, isColl = collapsed[s.idx];
    const onCrit = crit.has(s);
    const row = h('div.vrow' + (onCrit ? '.oncrit' : '') + (selected === s ? '.sel' : '') + (matches && matches.has(s) ? '.match' : ''),
      { 'data-span-id': s.id, 'data-depth': s.depth });
    const tog = h('span.tog', hasKids ? (isColl ? '▸' : '▾') : '');
    if (hasKids) tog.dataset.toggle = '1';
    const name = h('div.namecol', { style: { paddingLeft: `${Math.min(s.depth, 60) * 12 + 4}px` }, title: `${s.service}: ${s.name}` },
      tog, h('span.sw', { style: { background: colourOf(s.service) } }), h('span.svc', s.service), h('span.nm', s.name),
      s.error ? h('span.errmark', { title: 'error' }, '!') : null,
      isColl ? h('span.cnt', `+${s.size - 1}`) : null);
    const lane = h('div.lane');
    lane.append(h('div.bar' + (s.error ? '.err' : ''), { style: { left: pct(s.start), width: pct(s.dur), background: colourOf(s.service) } }));
    // critical path: the span's own stretches; a collapsed span shows the whole stretch spent in its subtree
    const w = critWithin.get(s);
    const mine = isColl && w ? [w] : crit.get(s) || [];
    for (const [a, b] of mine) lane.append(h('div.crit', { style: { left: pct(a), width: pct(b - a) } }));
    // links to the parent's row where the path steps down into this span (at its end) and back up (at its start)
    const pr = w && s.parent && critWithin.has(s.parent) ? rowOf[s.parent.idx] : -1;
    if (pr >= 0 && pr < i) {
      const up = (i - pr) * ROW;
      for (const x of w[1] - w[0] > D / 2000 ? w : [w[1]]) lane.append(h('div.crit-link', { style: { left: pct(x), top: `${CRIT_Y - up}px`, height: `${up}px` } }));
    }
    // duration label: right of the bar, else left of it, else inside it, in the longest stretch off the path
    const pos = s.end / D < 0.8 ? { left: `calc(${pct(s.end)} + 4px)` } : s.start / D > 0.2
      ? { right: `calc(${(100 - 100 * s.start / D).toFixed(3)}% + 4px)` } : null;
    lane.append(pos ? h('span.lbl', { style: pos }, fmtDur(s.dur)) : h('span.lbl.in', { style: { left: `calc(${pct(freeStart(s, mine))} + 4px)` } }, fmtDur(s.dur)));
    row.append(name, lane);
    return row;
  }

  const scroller = h('div.vscroll', { id: 'timeline' });
  const spacer = h('div.vspacer');
  scroller.append(spacer);
  const vl = virtualList(scroller, spacer, renderRow, signal);
  const details = h('div.details', { id: 'span-details', style: { display: 'none' } });
  const toggle = s => { collapsed[s.idx] ^= 1; computeVisible(); vl.setCount(visible.length); };
  scroller.addEventListener('click', e => {
    const row = e.target.closest('.vrow');
    if (!row) return;
    const s = m.byId.get(row.dataset.spanId);
    if (!s) return;
    if (e.target.dataset.toggle) { toggle(s); return; }
    select(s);
  });
  const closeDetails = () => { selected = null; details.style.display = 'none'; vl.refresh(); };
  function select(s) {
    selected = s;
    showDetails(details, s, m, crit, closeDetails);
    vl.refresh();
  }
  // keyboard: up/down move the selection, left collapses (or goes to the parent), right expands, Escape closes details
  document.addEventListener('keydown', e => {
    if (e.target.closest && e.target.closest('input, textarea, select') || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === 'Escape' && selected) { closeDetails(); return; }
    if (!['ArrowDown', 'ArrowUp', 'ArrowLeft', 'ArrowRight'].includes(e.key)) return;
    e.preventDefault();
    let i = selected ? visible.indexOf(selected) : -1;
    if (e.key === 'ArrowDown') i = Math.min(visible.length - 1, i + 1);
    else if (e.key === 'ArrowUp') i = Math.max(0, i - 1);
    else if (selected && e.key === 'ArrowLeft') {
      if (selected.children.length && !collapsed[selected.idx]) { toggle(selected); return; }
      if (selected.parent) { select(selected.parent); vl.scrollTo(visible.indexOf(selected)); }
      return;
    } else if (selected && e.key === 'ArrowRight') { if (collapsed[selected.idx]) toggle(selected); return; }
    if (i >= 0 && visible[i]) { select(visible[i]); vl.scrollTo(i); }
  }, { signal });
  function setAll(v, depth) {
    for (const s of m.order) collapsed[s.idx] = s.children.length && (depth === undefined ? v : s.depth >= depth) ? 1 : 0;
    computeVisible(); vl.setCount(visible.length);
  }
  function reveal(s) {
    for (let p = s.parent; p; p = p.parent) collapsed[p.idx] = 0;
    computeVisible(); vl.setCount(visible.length);
    vl.scrollTo(visible.indexOf(s));
  }
  // find box: highlights spans whose service, name, ID or attribute values contain the text; Enter jumps to the next
  const find = h('input', { type: 'search', id: 'trace-find', placeholder: 'Find spans (name, service, attribute)…' });
  const findInfo = h('span.muted');
  let matchList = [], matchPos = -1;
  const runFind = debounce(() => {
    const q = find.value.trim().toLowerCase();
    if (!q) { matches = null; matchList = []; findInfo.textContent = ''; vl.refresh(); return; }
    matchList = m.order.filter(s => s.name.toLowerCase().includes(q) || s.service.toLowerCase().includes(q) || s.id.includes(q) ||
      (s.raw.attributes || []).some(a => a.key.toLowerCase().includes(q) || anyValue(a.value).toLowerCase().includes(q)));
    matches = new Set(matchList); matchPos = -1;
    findInfo.textContent = `${matchList.length} match${matchList.length === 1 ? '' : 'es'}`;
    vl.refresh();
  }, 150);
  find.addEventListener('input', runFind);
  find.addEventListener('keydown', e => {
    if (e.key !== 'Enter' || !matchList.length) return;
    matchPos = (matchPos + (e.shiftKey ? matchList.length - 1 : 1)) % matchList.length;
    findInfo.textContent = `${matchPos + 1} / ${matchList.length}`;
    reveal(matchList[matchPos]); select(matchList[matchPos]);
  });
  const dl = h('a', { href: blobUrl, download: `trace-${id}.json`, id: 'download-json' }, h('button', { type: 'button', tabindex: -1 }, 'Download JSON'));
  root.append(h('div.trace-tools',
    h('button', { type: 'button', id: 'expand-all', onclick: () => setAll(0) }, 'Expand all'),
    h('button', { type: 'button', id: 'collapse-all', onclick: () => setAll(1) }, 'Collapse all'),
    h('button', { type: 'button', onclick: () => setAll(0, 2) }, 'Depth 2'),
    h('button', { type: 'button', onclick: () => setAll(0, 4) }, 'Depth 4'),
    find, findInfo, h('span.grow'),
    h('span.crit-legend', { title: `${fmtDur(critTotal)} on the critical path` }, h('i'), 'critical path'),
    h('a', { href: `#/compare/${id}/` }, h('button', { type: 'button', tabindex: -1 }, 'Compare…')),
    dl));
  root.append(h('div.trace-body', h('div.wf', axisHead(h('span', `${m.spans.length} spans`), D), scroller), details));
  // big traces start collapsed below depth 3 so the first screen is meaningful; small ones fully expanded
  if (m.spans.length > 2000) setAll(0, 3); else { computeVisible(); vl.setCount(visible.length); }
  performance.mark('strata:timeline-rendered');
  if (params.span) { const s = m.byId.get(params.span); if (s) { reveal(s); select(s); } }
}

function attrTable(attrs) {
  if (!attrs || !attrs.length) return h('div.muted', 'none');
  return h('table.attrs', h('tbody', attrs.slice().sort((a, b) => a.key < b.key ? -1 : 1).map(a => h('tr', h('td', a.key), h('td', anyValue(a.value))))));
}

function showDetails(box, s, m, crit, onClose) {
  const sp = s.raw;
  const st = sp.status || {};
  const critTime = (crit.get(s) || []).reduce((a, [x, y]) => a + y - x, 0);
  const kv = (k, v) => h('tr', h('td', k), h('td', v));
  box.replaceChildren(...[
    h('button.close', { type: 'button', onclick: onClose, 'aria-label': 'Close details' }, '✕'),
    h('h2', s.name || '(no name)'),
    h('div', h('span.chip', h('span.dot', { style: { background: colourOf(s.service) } }), s.service),
      ' ', h('span.chip', kindName(sp.kind)), ' ',
      h('span.chip' + (s.error ? '.err' : ''), { id: 'span-status' }, `status: ${statusName(st.code)}`)),
    st.message ? h('div.error-box', { style: { marginTop: '8px' } }, st.message) : null,
    h('h3', 'Span'),
    h('table.attrs', h('tbody',
      kv('duration', fmtDur(s.dur)),
      kv('start', `${fmtTime(Number((m.baseNs + BigInt(s.start)) / 1000000n))} (+${fmtDur(s.start)})`),
      kv('critical path', critTime ? fmtDur(critTime) : 'not on path'),
      kv('children', String(s.children.length)),
      kv('span ID', s.id),
      kv('parent span ID', s.parentId ? (s.parent ? s.parentId : `${s.parentId} (not in trace)`) : '(root)'),
      kv('trace ID', idHex(sp.traceId, 16)),
      sp.traceState ? kv('trace state', sp.traceState) : null,
      sp.flags !== undefined ? kv('flags', String(sp.flags)) : null)),
    h('h3', 'Span attributes'), attrTable(sp.attributes),
    h('h3', `Events (${(sp.events || []).length})`),
    (sp.events || []).length ? h('div', sp.events.map(ev => {
      const off = Number(big(ev.timeUnixNano) - s.stBig);
      return h('div.event', h('div', h('b', ev.name || '(event)'), h('span.muted', ` at +${fmtDur(off)}`)), (ev.attributes || []).length ? attrTable(ev.attributes) : null);
    })) : h('div.muted', 'none'),
    h('h3', `Links (${(sp.links || []).length})`),
    (sp.links || []).length ? h('div', sp.links.map(l => {
      const tid = idHex(l.traceId, 16), sid = idHex(l.spanId, 8);
      return h('div.event', h('div', h('a.mono', { href: `#/trace/${tid}?span=${sid}` }, `${tid} / ${sid}`)), (l.attributes || []).length ? attrTable(l.attributes) : null);
    })) : h('div.muted', 'none'),
    h('h3', 'Resource'), attrTable(s.resAttrs),
    h('h3', 'Instrumentation scope'),
    h('table.attrs', h('tbody', kv('name', s.scope.name || ''), kv('version', s.scope.version || ''))),
    (s.scope.attributes || []).length ? attrTable(s.scope.attributes) : null].filter(Boolean));
  box.style.display = '';
  box.scrollTop = 0;
}

// ---------------------------------------------------------------- compare

export function comparePage(root, args, params, signal) {
  const [a, b] = [(args[0] || '').trim(), (args[1] || '').trim()];
  if (!a || !b) {
    const ia = h('input', { id: 'compare-a', value: a, placeholder: 'Trace ID A (baseline)', spellcheck: 'false' });
    const ib = h('input', { id: 'compare-b', value: b, placeholder: 'Trace ID B', spellcheck: 'false' });
    root.append(h('form.panel.cmp-form', { onsubmit: e => {
      e.preventDefault();
      if (ia.value.trim() && ib.value.trim()) location.hash = `#/compare/${encodeURIComponent(ia.value.trim())}/${encodeURIComponent(ib.value.trim())}`;
    } }, h('h1', { style: { marginBottom: '10px' } }, 'Compare two traces'),
    h('p.muted', 'Spans are matched by their path of (service, span name) from the root. Pick two traces in the search results, or enter their IDs.'),
    ia, ib, h('button.primary', { type: 'submit' }, 'Compare')));
    (a ? ib : ia).focus();
    return;
  }
  root.className = 'fill';
  const status = h('div.panel.loading', h('span.spinner'), 'Loading both traces…');
  root.append(status);
  const named = (id, label) => loadTrace(id, signal).catch(e => {
    if (e.name !== 'AbortError') e.message = `Trace ${label} (${id}): ${e.status === 404 ? 'not found' : e.message}`;
    throw e;
  });
  Promise.all([named(a, 'A'), named(b, 'B')]).then(([ta, tb]) => {
    if (signal.aborted) return;
    status.remove();
    renderCompare(root, a, b, buildModel(ta.json), buildModel(tb.json), signal);
  }).catch(e => {
    if (e.name === 'AbortError') return;
    status.replaceWith(errorBox(e));
  });
}

// Keys every span by its path of (service, name) from the root; same-named siblings are told apart by their order.
function pathKeys(m) {
  const key = new Map();
  const count = new Map();
  for (const s of m.order) {
    const pk = s.parent ? key.get(s.parent) : '';
    const base = `${pk}\u0001${s.service}\u0000${s.name}`;
    const n = count.get(base) || 0;
    count.set(base, n + 1);
    key.set(s, `${base}#${n}`);
  }
  return key;
}

export function diffTraces(ma, mb) {
  const ka = pathKeys(ma), kb = pathKeys(mb);
  const nodes = new Map(), roots = [];
  const mk = (k, s, parentKey) => {
    const n = { key: k, a: null, b: null, children: [], service: s.service, name: s.name };
    nodes.set(k, n);
    const p = parentKey !== undefined && nodes.get(parentKey);
    if (p) p.children.push(n); else roots.push(n);
    return n;
  };
  for (const s of ma.order) { const k = ka.get(s); (nodes.get(k) || mk(k, s, s.parent ? ka.get(s.parent) : undefined)).a = s; }
  for (const s of mb.order) { const k = kb.get(s); (nodes.get(k) || mk(k, s, s.parent ? kb.get(s.parent) : undefined)).b = s; }
  const counts = { added: 0, missing: 0, slower: 0, faster: 0, same: 0 };
  const order = [];
  const startOf = n => n.a ? n.a.start : n.b.start;
  const stack = roots.sort((x, y) => startOf(x) - startOf(y)).slice().reverse().map(n => [n, 0]);
  while (stack.length) {
    const [n, d] = stack.pop();
    n.depth = d;
    if (!n.a) n.diff = 'added';
    else if (!n.b) n.diff = 'missing';
    else {
      const da = n.a.dur, db = n.b.dur;
      n.diff = db > da * 1.2 && db - da > 1e6 ? 'slower' : da > db * 1.2 && da - db > 1e6 ? 'faster' : 'same';
    }
    counts[n.diff]++;
    n.idx = order.length; order.push(n);
    n.children.sort((x, y) => startOf(x) - startOf(y));
    for (let i = n.children.length - 1; i >= 0; i--) stack.push([n.children[i], d + 1]);
  }
  for (let i = order.length - 1; i >= 0; i--) order[i].size = 1 + order[i].children.reduce((a, c) => a + c.size, 0);
  return { order, counts };
}

function renderCompare(root, ida, idb, ma, mb, signal) {
  const { order, counts } = diffTraces(ma, mb);
  const D = Math.max(ma.duration, mb.duration) || 1;
  const pct = v => `${(100 * v / D).toFixed(3)}%`;
  const hdr = (label, id, m) => h('div', h('b', `${label}: `), h('a.mono', { href: `#/trace/${id}` }, id), ' ',
    h('span.muted', `${m.main.service}: ${m.main.name} · ${fmtDur(m.duration)} · ${m.spans.length} spans`));
  let onlyDiff = false;
  const onlyBox = h('input', { type: 'checkbox', id: 'only-diff' });
  root.append(h('div.panel', { style: { marginBottom: '8px', flex: 'none' } }, h('h1', { style: { marginBottom: '6px' } }, 'Trace comparison'), hdr('A', ida, ma), hdr('B', idb, mb)));
  root.append(h('div.cmp-summary', { id: 'compare-summary' },
    ...['added', 'missing', 'slower', 'faster', 'same'].map(k => h(`span.diffchip.${k}`, { 'data-count': k }, `${counts[k]} ${k}`)),
    h('span.muted', '(slower/faster: duration differs by more than 20% and 1 ms)'), h('span.grow'),
    h('label', onlyBox, ' only differences')));
  const collapsed = new Uint8Array(order.length);
  let visible = [];
  const include = n => !onlyDiff || n.diff !== 'same' || hasDiffBelow(n);
  const diffBelow = new Uint8Array(order.length);
  for (let i = order.length - 1; i >= 0; i--) {
    const n = order[i];
    diffBelow[i] = n.children.some(c => c.diff !== 'same' || diffBelow[c.idx]) ? 1 : 0;
  }
  function hasDiffBelow(n) { return diffBelow[n.idx] === 1; }
  function computeVisible() {
    const out = [];
    for (let i = 0; i < order.length;) {
      const n = order[i];
      if (!include(n)) { i += n.size; continue; }
      out.push(n); i += collapsed[i] ? n.size : 1;
    }
    visible = out;
  }
  const dcell = v => v === null ? '–' : fmtDur(v);
  function renderRow(i) {
    const n = visible[i];
    const da = n.a ? n.a.dur : null, db = n.b ? n.b.dur : null;
    const delta = da !== null && db !== null ? db - da : null;
    const tog = h('span.tog', n.children.length ? (collapsed[n.idx] ? '▸' : '▾') : '');
    if (n.children.length) tog.dataset.toggle = '1';
    const lane = h('div.lane');
    if (n.a) lane.append(h('div.bar.a' + (n.b ? '' : '.only'), { style: { left: pct(n.a.start), width: pct(n.a.dur) }, title: `A: ${fmtDur(n.a.dur)}` }));
    if (n.b) lane.append(h('div.bar.b' + (n.a ? '' : '.only'), { style: { left: pct(n.b.start), width: pct(n.b.dur) }, title: `B: ${fmtDur(n.b.dur)}` }));
    return h('div.vrow', { 'data-diff': n.diff, 'data-name': n.name, 'data-service': n.service, 'data-idx': n.idx },
      h('div.namecol', { style: { paddingLeft: `${Math.min(n.depth, 60) * 12 + 4}px` }, title: `${n.service}: ${n.name}` },
        tog, h('span.sw', { style: { background: colourOf(n.service) } }), h('span.svc', n.service), h('span.nm', n.name),
        n.diff !== 'same' ? h('span.diffmark', n.diff) : null,
        collapsed[n.idx] ? h('span.cnt', `+${n.size - 1}`) : null),
      h('div.cmp-cols', h('span', dcell(da)), h('span', dcell(db)),
        h('span', { style: { color: delta > 0 ? 'var(--slower)' : delta < 0 ? 'var(--faster)' : '' } }, delta === null ? '' : (delta > 0 ? '+' : '') + fmtDur(delta))),
      lane);
  }
  const scroller = h('div.vscroll', { id: 'compare-timeline' });
  const spacer = h('div.vspacer');
  scroller.append(spacer);
  const vl = virtualList(scroller, spacer, renderRow, signal);
  scroller.addEventListener('click', e => {
    const row = e.target.closest('.vrow');
    if (!row) return;
    const n = order[+row.dataset.idx];
    if (n.children.length) { collapsed[n.idx] ^= 1; computeVisible(); vl.setCount(visible.length); }
  });
  onlyBox.addEventListener('change', () => { onlyDiff = onlyBox.checked; computeVisible(); vl.setCount(visible.length); });
  root.append(h('div.trace-body', h('div.wf',
    axisHead('Span (A = light, B = dark)', D, h('div.cmp-cols', h('span', 'A'), h('span', 'B'), h('span', 'Δ'))), scroller)));
  computeVisible();
  vl.setCount(visible.length);
}
