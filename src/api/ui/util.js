// Shared helpers: API access (tenant header), DOM building, formatting, colours.

const TENANT_KEY = 'strata.tenant';
export function getTenant() { try { return localStorage.getItem(TENANT_KEY) || ''; } catch { return ''; } }
export function setTenant(v) { try { v ? localStorage.setItem(TENANT_KEY, v) : localStorage.removeItem(TENANT_KEY); } catch { /* private mode */ } }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// fetch() on the same origin with the tenant header; returns the Response, throws ApiError on HTTP errors.
export async function request(path, { method = 'GET', body, signal, headers = {} } = {}) {
  const h = { ...headers };
  const t = getTenant();
  if (t) h['X-Scope-OrgID'] = t;
  let res;
  try {
    res = await fetch(path, { method, body, signal, headers: h });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `Network error: ${e.message}`);
  }
  if (!res.ok) {
    let text = '';
    try { text = (await res.text()).trim(); } catch { /* ignore */ }
    throw new ApiError(res.status, text || `${res.status} ${res.statusText}`);
  }
  return res;
}
export async function getJSON(path, opts) { return (await request(path, opts)).json(); }
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, v);
  return u.toString();
}
export async function sql(query, signal) {
  return getJSON('/api/sql', { method: 'POST', body: query, signal, headers: { 'Content-Type': 'text/plain' } });
}

// h('div.cls#id', {attrs}, children...) – a tiny DOM builder.
export function h(tag, attrs, ...kids) {
  const m = /^([a-z0-9]+)?((?:[.#][\w-]+)*)$/i.exec(tag);
  const el = document.createElement(m[1] || 'div');
  for (const part of (m[2] || '').match(/[.#][\w-]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1)); else el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) { kids.unshift(attrs); attrs = null; }
  if (attrs) for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'selected') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, kids);
  return el;
}
function append(el, kids) {
  for (const k of kids) {
    if (k === undefined || k === null || k === false) continue;
    if (Array.isArray(k)) append(el, k);
    else el.append(k instanceof Node ? k : String(k));
  }
}
const SVGNS = 'http://www.w3.org/2000/svg';
export function s(tag, attrs = {}, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k !== undefined && k !== null && k !== false) el.append(k instanceof Node ? k : String(k));
  return el;
}

// Durations in nanoseconds -> short human string.
export function fmtDur(ns) {
  if (ns === undefined || ns === null || isNaN(ns)) return '–';
  const a = Math.abs(ns);
  if (a < 1e3) return `${Math.round(ns)} ns`;
  if (a < 1e6) return `${trim(ns / 1e3)} µs`;
  if (a < 1e9) return `${trim(ns / 1e6)} ms`;
  if (a < 60e9) return `${trim(ns / 1e9)} s`;
  const m = Math.floor(a / 60e9), sec = (a - m * 60e9) / 1e9;
  return `${ns < 0 ? '-' : ''}${m}m ${sec.toFixed(sec < 10 ? 1 : 0)}s`;
}
function trim(x) { const a = Math.abs(x); return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toFixed(2); }
const pad = (n, w = 2) => String(n).padStart(w, '0');
// Milliseconds since epoch -> "2025-11-23 13:20:01.123" in local time.
export function fmtTime(ms, withMs = true) {
  if (!isFinite(ms)) return '–';
  const d = new Date(ms);
  const base = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withMs ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}
export function fmtAgo(ms) {
  const d = (Date.now() - ms) / 1000;
  if (d < 0) return 'in the future';
  if (d < 90) return `${Math.round(d)}s ago`;
  if (d < 5400) return `${Math.round(d / 60)}m ago`;
  if (d < 129600) return `${Math.round(d / 3600)}h ago`;
  return `${Math.round(d / 86400)}d ago`;
}
// "150ms", "1.5s", "2m", "300us", "42" (ms) -> nanoseconds; NaN when unparsable.
export function parseDur(str) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$/.exec(str || '');
  if (!m) return NaN;
  const mul = { ns: 1, us: 1e3, 'µs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 }[m[2] || 'ms'];
  return parseFloat(m[1]) * mul;
}
// Normalizes a duration for TraceQL ("150" -> "150ms", "1.5s" stays).
export function durForTraceQL(str) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)?\s*$/.exec(str || '');
  if (!m) return null;
  return m[1] + (m[2] === 'µs' ? 'us' : (m[2] || 'ms'));
}

// Stable colour per service name.
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#e15759', '#76b7b2', '#edc948', '#9c755f', '#ff9da7', '#5b8ff9', '#8cd17d', '#d37295', '#a0cbe8', '#86bcb6', '#f1ce63', '#bab0ac'];
const colourCache = new Map();
export function colourOf(name) {
  let c = colourCache.get(name);
  if (!c) {
    let x = 2166136261;
    for (let i = 0; i < name.length; i++) { x ^= name.charCodeAt(i); x = Math.imul(x, 16777619); }
    c = PALETTE[(x >>> 0) % PALETTE.length];
    colourCache.set(name, c);
  }
  return c;
}

// IDs arrive as hex (search, SQL) or base64 (OTLP JSON of the trace endpoint); always return lowercase hex.
export function idHex(v, bytes) {
  if (!v) return '';
  if (/^[0-9a-fA-F]+$/.test(v) && (!bytes || v.length === bytes * 2)) return v.toLowerCase();
  try {
    const bin = atob(v);
    let out = '';
    for (let i = 0; i < bin.length; i++) out += bin.charCodeAt(i).toString(16).padStart(2, '0');
    return out;
  } catch { return String(v); }
}

// OTLP AnyValue -> display string.
export function anyValue(v) {
  if (!v || typeof v !== 'object') return v === undefined ? '' : String(v);
  if ('stringValue' in v) return v.stringValue;
  if ('intValue' in v) return String(v.intValue);
  if ('doubleValue' in v) return String(v.doubleValue);
  if ('boolValue' in v) return String(v.boolValue);
  if ('arrayValue' in v) return '[' + (v.arrayValue.values || []).map(x => jsonish(x)).join(', ') + ']';
  if ('kvlistValue' in v) return '{' + (v.kvlistValue.values || []).map(kv => `${kv.key}: ${jsonish(kv.value)}`).join(', ') + '}';
  if ('bytesValue' in v) return `0x${idHex(v.bytesValue)}`;
  return '';
}
function jsonish(v) { const s = anyValue(v); return v && 'stringValue' in v ? JSON.stringify(s) : s; }

export function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

// Renders an error (ApiError or other) into a readable box; marks the position "at L:C" in the query if given.
export function errorBox(err, query) {
  const msg = err && err.message ? err.message : String(err);
  const box = h('div.error-box', { role: 'alert' }, h('b', err && err.status ? `Error ${err.status}: ` : 'Error: '), msg);
  const m = / at (\d+):(\d+)/.exec(msg);
  if (m && query) {
    const lines = query.split('\n'), ln = +m[1], col = +m[2];
    if (lines[ln - 1] !== undefined) {
      box.append(h('pre', lines[ln - 1] + '\n', h('span.caret', ' '.repeat(Math.max(0, col - 1)) + '^')));
    }
  }
  return box;
}

// Time ranges used by search and graph: presets are relative to now.
export const RANGES = [['15m', 'Last 15 minutes', 900], ['1h', 'Last hour', 3600], ['6h', 'Last 6 hours', 21600], ['24h', 'Last 24 hours', 86400], ['7d', 'Last 7 days', 604800], ['custom', 'Custom range', 0]];
export function resolveRange(p, def = '1h') {
  if (p.start && p.end) return { range: 'custom', start: Math.floor(+p.start), end: Math.ceil(+p.end) };
  const key = RANGES.find(r => r[0] === p.range && r[2]) ? p.range : def;
  const secs = RANGES.find(r => r[0] === key)[2];
  const end = Math.ceil(Date.now() / 1000);
  return { range: key, start: end - secs, end };
}
// unix seconds <-> value of <input type=datetime-local> (local time)
export function toLocalInput(sec) {
  const d = new Date(sec * 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
export function fromLocalInput(v) { const t = new Date(v).getTime(); return isNaN(t) ? NaN : Math.floor(t / 1000); }

// Builds the range picker (select + two datetime inputs shown for "custom"). get() -> {range,start,end}|{range}
export function rangePicker(initial) {
  const sel = h('select', { 'aria-label': 'Time range' }, RANGES.map(([k, label]) => h('option', { value: k, selected: k === initial.range }, label)));
  const from = h('input', { type: 'datetime-local', step: 1, value: toLocalInput(initial.start), 'aria-label': 'From' });
  const to = h('input', { type: 'datetime-local', step: 1, value: toLocalInput(initial.end), 'aria-label': 'To' });
  const custom = h('div.pair.custom-range', from, to);
  const sync = () => { custom.style.display = sel.value === 'custom' ? '' : 'none'; };
  sel.addEventListener('change', () => {
    if (sel.value === 'custom') {
      const r = resolveRange({ range: initial.range === 'custom' ? '1h' : initial.range });
      if (!from.value) from.value = toLocalInput(r.start);
      if (!to.value) to.value = toLocalInput(r.end);
    }
    sync();
  });
  sync();
  return {
    el: h('div', sel, custom), sel, from, to,
    get() {
      if (sel.value !== 'custom') return { range: sel.value };
      return { start: fromLocalInput(from.value), end: fromLocalInput(to.value) };
    },
  };
}

// Unix seconds just after the newest stored span (via SQL), or null when nothing is stored.
export async function latestDataEnd(signal) {
  const [row] = await sql('SELECT max(start_unix_nano) AS t FROM spans', signal);
  if (!row || row.t === null || row.t === undefined) return null;
  return Number(BigInt(row.t) / 1000000000n) + 1;
}
