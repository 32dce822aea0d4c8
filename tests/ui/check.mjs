#!/usr/bin/env node
// Browser check of the Strata web UI (src/api/ui), driven by playwright-core and a system Chromium.
//
//   node tests/ui/check.mjs
//
// Environment:
//   STRATA_UI_BASE          required. Origin serving the UI and the API, e.g. http://127.0.0.1:13300
//   STRATA_UI_EXPECT        required. Path of a JSON file describing data the harness ingested (schema below).
//   STRATA_UI_ARTIFACTS     required. Directory for screenshots (created if missing).
//   STRATA_UI_NODE_MODULES  optional. Directory holding playwright-core (a node_modules directory or the
//                           --prefix directory of an npm install). Without it playwright-core is resolved from
//                           tests/ui (npm install --prefix tests/ui).
//   STRATA_UI_CHROMIUM      optional. Chromium executable, default /usr/bin/chromium.
//   STRATA_UI_BENCH=1       optional. Also measures the big trace and prints one JSON line per figure:
//                           {"bench":"ui.big_trace.<name>","ms":<number>,"spans":N}
//   STRATA_UI_TENANT        optional. Tenant typed into the header field (sent as X-Scope-OrgID).
//
// STRATA_UI_EXPECT schema (all times unix seconds; IDs lowercase hex; sections marked optional may be left out,
// every section present is checked):
// {
//   "search":  { "service": "cart",                 // service typed into the form
//                "operation": "GET /cart",          // optional, span name typed into the form
//                "start": 1763899900, "end": 1763900100,   // time range of the search (custom range)
//                "traceId": "…",                    // must be among the results of the form search and of the TraceQL search
//                "traceql": "{ … }",                // optional, default { resource.service.name = "<service>" }
//                "limit": 500 },                    // optional, default 500
//                                                   // the window must hold >= 6 traces: a stream of their /api/search
//                                                   // answer, shuffled into lines, checks how the page merges
//   "trace":   { "traceId": "…", "spanCount": 7 },  // a small trace: all rows shown, details open on click
//   "compare": { "a": "…", "b": "…",                // B is compared against A (A = baseline)
//                "added": ["span name", …],          // span names only in B
//                "missing": ["span name", …],        // span names only in A
//                "slower": ["span name", …],         // optional, slower in B (>20% and >1ms)
//                "faster": ["span name", …] },       // optional
//   "graph":   { "start": 1763899900, "end": 1763900100,
//                "edges": [["frontend", "cart"], …] },   // caller -> callee pairs that must be drawn
//   "big":     { "traceId": "…", "spanCount": 10000 }    // optional, large trace: loads, stays virtual, is measured
// }
//
// Fails (exit 1, message on stderr) on: a missing input, playwright-core or Chromium; any console error, uncaught
// page error or failed same-origin request (HTTP >= 400 or network failure) that a step did not expect; any check.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const env = process.env;
function die(msg) { console.error(`ui check: FAIL: ${msg}`); process.exit(1); }
for (const k of ['STRATA_UI_BASE', 'STRATA_UI_EXPECT', 'STRATA_UI_ARTIFACTS']) if (!env[k]) die(`${k} is not set (see the header of tests/ui/check.mjs)`);
const BASE = env.STRATA_UI_BASE.replace(/\/+$/, '');
const ART = env.STRATA_UI_ARTIFACTS;
const BENCH = env.STRATA_UI_BENCH === '1';
let EXPECT;
try { EXPECT = JSON.parse(fs.readFileSync(env.STRATA_UI_EXPECT, 'utf8')); } catch (e) { die(`cannot read STRATA_UI_EXPECT ${env.STRATA_UI_EXPECT}: ${e.message}`); }
fs.mkdirSync(ART, { recursive: true });

let chromium;
{
  const from = env.STRATA_UI_NODE_MODULES ? path.join(path.resolve(env.STRATA_UI_NODE_MODULES), 'x.js') : import.meta.url;
  try { ({ chromium } = createRequire(from)('playwright-core')); }
  catch (e) { die(`playwright-core not found (${env.STRATA_UI_NODE_MODULES ? `STRATA_UI_NODE_MODULES=${env.STRATA_UI_NODE_MODULES}` : 'tests/ui/node_modules'}): ${e.message.split('\n')[0]}. Install it with: npm install --prefix <dir> playwright-core@1 and set STRATA_UI_NODE_MODULES=<dir>`); }
}
const CHROME = env.STRATA_UI_CHROMIUM || '/usr/bin/chromium';
if (!fs.existsSync(CHROME)) die(`Chromium not found at ${CHROME} (apt-get install chromium, or set STRATA_UI_CHROMIUM)`);

const failures = [];
const log = (...a) => console.log('ui check:', ...a);
const qs = o => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== undefined && v !== null)).toString();

const browser = await chromium.launch({
  executablePath: CHROME,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
}).catch(e => die(`cannot launch Chromium ${CHROME}: ${e.message.split('\n')[0]}`));

// One page with listeners for console errors, page errors and failed same-origin requests.
// `allow` holds regexes of request URLs a step expects to fail (for example the bad TraceQL query).
async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  if (env.STRATA_UI_TENANT) {
    await context.addInitScript(t => { try { localStorage.setItem('strata.tenant', t); } catch { } }, env.STRATA_UI_TENANT);
  }
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  const state = { problems: [], allow: [] };
  const origin = new URL(BASE).origin;
  const allowed = url => state.allow.some(re => re.test(url));
  page.on('pageerror', e => state.problems.push(`uncaught page error: ${e.message}`));
  page.on('console', msg => {
    if (msg.type() !== 'error') return;
    const loc = msg.location();
    // Chromium reports every failed request as a console error as well; those are judged by the response handler.
    if (/Failed to load resource/.test(msg.text()) && loc && loc.url && (allowed(loc.url) || loc.url.startsWith(origin))) return;
    state.problems.push(`console error: ${msg.text()}`);
  });
  page.on('response', r => {
    if (!r.url().startsWith(origin) || r.status() < 400 || allowed(r.url())) return;
    state.problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });
  page.on('requestfailed', r => {
    const err = r.failure() ? r.failure().errorText : '';
    if (!r.url().startsWith(origin) || /ERR_ABORTED/.test(err) || allowed(r.url())) return;
    state.problems.push(`request failed: ${r.method()} ${r.url()} ${err}`);
  });
  return { page, context, state };
}

async function step(name, fn) {
  const t0 = Date.now();
  const { page, context, state } = await newPage();
  try {
    await fn(page, state);
    await page.waitForTimeout(150); // let late console messages arrive
    if (state.problems.length) throw new Error(state.problems.join('\n  '));
    log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failures.push(`${name}: ${e.message}`);
    console.error(`ui check: FAIL ${name}: ${e.message}`);
    await page.screenshot({ path: path.join(ART, `FAILED-${name}.png`), fullPage: false }).catch(() => {});
  } finally {
    await context.close();
  }
}
function check(cond, msg) { if (!cond) throw new Error(msg); }
const shot = (page, name) => page.screenshot({ path: path.join(ART, `${name}.png`) });

// Sets the search form's time range to a custom start/end (unix seconds), in the browser's time zone.
async function setRange(page, start, end) {
  await page.selectOption('.search-form select[aria-label="Time range"]', 'custom');
  const local = await page.evaluate(([a, b]) => [a, b].map(sec => {
    const d = new Date(sec * 1000), p = n => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }), [start, end]);
  await page.fill('.search-form input[aria-label="From"]', local[0]);
  await page.fill('.search-form input[aria-label="To"]', local[1]);
}
const apiHeaders = () => (env.STRATA_UI_TENANT ? { 'X-Scope-OrgID': env.STRATA_UI_TENANT } : {});
// Waits for the streamed search to finish: the progress panel says done with "n of m blocks"; fails on a search error.
async function waitSearchDone(page) {
  await page.waitForSelector('#search-progress[data-search-state=done], #search-progress[data-search-state=error], #search-progress[data-search-state=cancelled], .search-error', { timeout: 60000 });
  const err = await page.$('.search-error');
  if (err) throw new Error(`search failed: ${(await err.innerText()).trim()}`);
  const st = await page.getAttribute('#search-progress', 'data-search-state');
  check(st === 'done', `search ended in state ${st}`);
  const blocks = (await page.innerText('#search-blocks')).trim();
  const m = /^(\d+) of (\d+) blocks?$/.exec(blocks);
  check(m && +m[1] <= +m[2] && (+m[2] === 0 || +m[1] >= 1), `progress does not say "n of m blocks": "${blocks}"`);
  check(await page.evaluate(() => performance.getEntriesByType('resource').some(e => e.name.includes('/api/search/stream?'))), 'the search did not use /api/search/stream');
  await page.waitForSelector('#search-results');
}
// Trace IDs of the result list (as sorted on the page) and of the scatter plot.
async function shownIds(page) {
  const rows = await page.$$eval('#results-table tbody tr[data-trace-id]', rs => rs.map(r => r.dataset.traceId));
  const dots = await page.$$eval('#scatter circle[data-trace-id]', cs => cs.map(c => c.dataset.traceId));
  return { rows, dots };
}
// The finished streamed search shows exactly /api/search's answer to the same parameters, in its order.
async function sameAsSearchApi(page) {
  check((await page.$eval('.results-head select', s => s.value)) === 'recent', 'results are not sorted by most recent');
  const params = await page.getAttribute('#search-progress', 'data-params');
  const r = await fetch(`${BASE}/api/search?${params}`, { headers: apiHeaders() });
  check(r.ok, `/api/search?${params} answered ${r.status}`);
  const want = ((await r.json()).traces || []).map(t => t.traceID);
  const { rows, dots } = await shownIds(page);
  check(rows.join() === want.join(), `streamed results differ from /api/search?${params}\n  shown: ${rows.join(' ')}\n  api:   ${want.join(' ')}`);
  check(dots.length === want.length && dots.every(id => want.includes(id)), `scatter plot shows ${dots.length} traces, /api/search ${want.length}`);
  return want;
}

// ---------------------------------------------------------------- search
if (EXPECT.search) await step('search', async page => {
  const e = EXPECT.search;
  check(e.service && e.start && e.end && e.traceId, 'expect.search needs service, start, end, traceId');
  await page.goto(`${BASE}/#/search`);
  await page.waitForSelector('.search-form');
  await shot(page, 'search-empty');
  await page.fill('input[name=service]', e.service);
  if (e.operation) await page.fill('input[name=operation]', e.operation);
  await page.fill('input[name=limit]', String(e.limit || 500));
  await setRange(page, e.start, e.end);
  const compiled = await page.innerText('.compiled code');
  check(compiled.includes(`resource.service.name = "${e.service}"`), `compiled TraceQL does not name the service: ${compiled}`);
  await page.click('#run-search');
  await waitSearchDone(page);
  await sameAsSearchApi(page);
  check(await page.$(`#results-table tr[data-trace-id="${e.traceId}"]`), `trace ${e.traceId} not in the form search results (${await page.innerText('#result-count')})`);
  check(await page.$(`#scatter circle[data-trace-id="${e.traceId}"]`), `trace ${e.traceId} not in the scatter plot`);
  const hash = await page.evaluate(() => location.hash);
  check(hash.includes(`service=${encodeURIComponent(e.service)}`), `search is not deep-linked in the URL: ${hash}`);
  await shot(page, 'search-results');
  // the deep link alone reproduces the search
  await page.goto(`${BASE}/${hash}`);
  await page.reload();
  await waitSearchDone(page);
  check(await page.$(`#results-table tr[data-trace-id="${e.traceId}"]`), 'reloading the deep link does not show the trace');
  // clicking a point of the scatter plot opens the trace
  await page.click(`#scatter circle[data-trace-id="${e.traceId}"]`);
  await page.waitForSelector('#trace-span-count', { timeout: 30000 });
  check((await page.evaluate(() => location.hash)) === `#/trace/${e.traceId}`, 'scatter click did not open the trace');
});

if (EXPECT.search) await step('search-traceql', async page => {
  const e = EXPECT.search;
  await page.goto(`${BASE}/#/search`);
  await page.click('.tabs button[data-mode=traceql]');
  // autocomplete: attribute names after "resource." and values after "="
  await page.fill('#traceql', '');
  await page.type('#traceql', '{ resource.serv');
  await page.waitForSelector('.ac div:has-text("resource.service.name")', { timeout: 30000 });
  await page.keyboard.press('Enter');
  await page.type('#traceql', ' = ');
  await page.waitForSelector(`.ac div:text-is("${e.service}")`, { timeout: 30000 });
  await shot(page, 'search-autocomplete');
  await page.keyboard.press('Escape');
  const q = e.traceql || `{ resource.service.name = "${e.service}" }`;
  await page.fill('#traceql', q);
  await page.fill('input[name=limit]', String(e.limit || 500));
  await setRange(page, e.start, e.end);
  await page.click('#run-search');
  await waitSearchDone(page);
  await sameAsSearchApi(page);
  check(await page.$(`#results-table tr[data-trace-id="${e.traceId}"]`), `trace ${e.traceId} not in the TraceQL results of ${q}`);
  await shot(page, 'search-traceql');
  // pick two results and compare them
  const boxes = page.locator('#results-table input[type=checkbox]');
  if (await boxes.count() >= 2) {
    const ids = [await boxes.nth(0).getAttribute('data-trace-id'), await boxes.nth(1).getAttribute('data-trace-id')];
    await boxes.nth(0).check();
    await boxes.nth(1).check();
    await page.click('#compare-selected');
    await page.waitForSelector('#compare-timeline .vrow', { timeout: 30000 });
    const hash = await page.evaluate(() => location.hash);
    check(hash === `#/compare/${ids[0]}/${ids[1]}`, `compare selected opened ${hash}`);
  }
});

if (EXPECT.search) await step('search-bad-query', async (page, state) => {
  const e = EXPECT.search;
  const bad = '{ foo = 1 }';
  const r = await fetch(`${BASE}/api/search/stream?${qs({ q: bad, start: e.start, end: e.end })}`, { headers: apiHeaders() });
  const msg = (await r.text()).trim();
  check(r.status === 400 && msg, `the API should reject ${bad} with 400 and a message, got ${r.status} ${msg}`);
  state.allow.push(/\/api\/search(\/stream)?\?/);
  await page.goto(`${BASE}/#/search?${qs({ q: bad, start: e.start, end: e.end })}`);
  await page.waitForSelector('.search-error .error-box');
  const shown = await page.innerText('.search-error');
  check(shown.includes(msg), `the error box does not show the server's message.\n  server: ${msg}\n  shown: ${shown}`);
  check(/400/.test(shown), 'the error box does not show the status');
  await shot(page, 'search-error');
});

// The page merges a stream whose lines arrive in any order and cuts the merged list at the limit; a failure line
// mid-stream shows the error and keeps what arrived. The stream is replayed from /api/search's real answer.
if (EXPECT.search) await step('search-stream-merge', async page => {
  const e = EXPECT.search;
  const r = await fetch(`${BASE}/api/search?${qs({ q: '{}', limit: 40, start: e.start, end: e.end, spss: 3 })}`, { headers: apiHeaders() });
  check(r.ok, `/api/search answered ${r.status}`);
  const all = (await r.json()).traces || [];
  check(all.length >= 6, `need at least 6 traces in the search window for the merge check, found ${all.length}`);
  let seed = 7;
  const shuffled = all.slice().sort(() => ((seed = (seed * 48271) % 2147483647) / 2147483647) - 0.5);
  const chunks = [0, 1, 2, 3].map(i => shuffled.filter((_, j) => j % 4 === i));
  const metrics = i => ({ inspectedTraces: 10 * (i + 1), inspectedBytes: String(1000 * (i + 1)), totalBlocks: 4, completedJobs: i + 1, totalJobs: 4 });
  const lines = chunks.map((c, i) => JSON.stringify({ traces: c, metrics: metrics(i) }));
  let body = '';
  await page.route(u => new URL(u).pathname === '/api/search/stream', route => route.fulfill({ status: 200, contentType: 'application/x-ndjson', body }));
  // the whole answer, over the limit, in shuffled lines
  const limit = all.length - 2;
  body = lines.join('\n') + '\n';
  await page.goto(`${BASE}/#/search?${qs({ q: '{}', start: e.start, end: e.end, limit })}`);
  await waitSearchDone(page);
  check((await page.innerText('#search-blocks')).trim() === '4 of 4 blocks', 'progress does not show the last line\'s blocks');
  const want = all.slice(0, limit).map(t => t.traceID);
  let shown = await shownIds(page);
  check(shown.rows.join() === want.join(), `shuffled stream merged wrongly\n  shown: ${shown.rows.join(' ')}\n  want:  ${want.join(' ')}`);
  check(shown.dots.length === limit, `scatter plot shows ${shown.dots.length} traces, expected ${limit}`);
  // two lines, then a failure
  body = lines.slice(0, 2).join('\n') + '\n{"error":"synthetic failure mid-stream"}\n';
  await page.goto(`${BASE}/#/search?${qs({ q: '{}', start: e.start, end: e.end, limit: 40 })}`);
  await page.waitForSelector('#search-progress[data-search-state=error]', { timeout: 30000 });
  check((await page.innerText('.search-error')).includes('synthetic failure mid-stream'), 'the mid-stream error is not shown');
  const partial = new Set([...chunks[0], ...chunks[1]].map(t => t.traceID));
  shown = await shownIds(page);
  check(shown.rows.join() === all.map(t => t.traceID).filter(id => partial.has(id)).join(), `partial results not kept after the failure: ${shown.rows.join(' ')}`);
  await shot(page, 'search-stream-error');
});

// ---------------------------------------------------------------- trace
if (EXPECT.trace) await step('trace', async page => {
  const e = EXPECT.trace;
  await page.goto(`${BASE}/#/trace/${e.traceId}`);
  await page.waitForSelector('#timeline .vrow', { timeout: 30000 });
  const n = +(await page.innerText('#trace-span-count'));
  check(n === e.spanCount, `span count shown ${n}, expected ${e.spanCount}`);
  const rows = await page.$$eval('#timeline .vrow', r => r.length);
  check(rows === Math.min(e.spanCount, rows) && rows >= Math.min(e.spanCount, 20), `timeline shows ${rows} rows for ${e.spanCount} spans`);
  check(await page.$('#timeline .crit'), 'no critical path drawn');
  // the path's stretches tile the root span: their total is the root's duration (here the trace's)
  const critTitle = await page.getAttribute('.crit-legend', 'title');
  const dur = (await page.innerText('#trace-duration')).trim();
  check(critTitle === `${dur} on the critical path`, `critical path total "${critTitle}" is not the trace duration ${dur}`);
  const header = await page.innerText('#trace-header');
  check(header.includes(e.traceId), 'trace header does not name the trace');
  // details of the second row open on click
  const second = page.locator('#timeline .vrow').nth(Math.min(1, rows - 1));
  const spanId = await second.getAttribute('data-span-id');
  const name = await second.locator('.nm').innerText();
  await second.locator('.nm').click();
  await page.waitForSelector('#span-details:visible');
  const det = await page.innerText('#span-details');
  check(det.includes(name) && det.includes(spanId) && /Span attributes/i.test(det) && /Resource/i.test(det), `span details incomplete:\n${det.slice(0, 400)}`);
  await shot(page, 'trace');
  // keyboard: ArrowDown selects the next row
  if (rows > 2) {
    const next = await page.locator('#timeline .vrow').nth(2).getAttribute('data-span-id');
    await page.keyboard.press('ArrowDown');
    check((await page.innerText('#span-details')).includes(next), 'ArrowDown did not select the next span');
  }
  // collapse and expand the root
  await page.click('#timeline .vrow >> nth=0 >> .tog');
  check((await page.$$eval('#timeline .vrow', r => r.length)) === 1, 'collapsing the root leaves more than one row');
  await page.click('#timeline .vrow >> nth=0 >> .tog');
  check((await page.$$eval('#timeline .vrow', r => r.length)) === rows, 'expanding the root does not restore the rows');
  // JSON download
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#download-json')]);
  const file = path.join(ART, `trace-${e.traceId}.json`);
  await dl.saveAs(file);
  const json = JSON.parse(fs.readFileSync(file, 'utf8'));
  check(json.trace || json.resourceSpans || json.batches, 'downloaded JSON is not a trace');
});

if (EXPECT.trace) await step('trace-not-found', async (page, state) => {
  state.allow.push(/\/api\/v2\/traces\//);
  await page.goto(`${BASE}/#/trace/0123456789abcdef0123456789abcdef`);
  await page.waitForSelector('.error-box');
  check(/not found/i.test(await page.innerText('.error-box')), 'a missing trace does not say "not found"');
});

// ---------------------------------------------------------------- compare
if (EXPECT.compare) await step('compare', async page => {
  const e = EXPECT.compare;
  await page.goto(`${BASE}/#/compare/${e.a}/${e.b}`);
  await page.waitForSelector('#compare-timeline .vrow', { timeout: 30000 });
  for (const kind of ['added', 'missing', 'slower', 'faster']) {
    for (const name of e[kind] || []) {
      const marked = await page.$$eval(`#compare-timeline .vrow[data-diff="${kind}"]`, (rs, n) => rs.some(r => r.dataset.name === n), name);
      if (!marked) {
        const got = await page.$$eval('#compare-timeline .vrow', rs => rs.map(r => `${r.dataset.name}=${r.dataset.diff}`).join(', '));
        throw new Error(`span "${name}" not marked ${kind}; rows: ${got}`);
      }
    }
  }
  await shot(page, 'compare');
});

// ---------------------------------------------------------------- graph
if (EXPECT.graph) await step('graph', async page => {
  const e = EXPECT.graph;
  await page.goto(`${BASE}/#/graph?${qs({ start: e.start, end: e.end })}`);
  await page.waitForSelector('#edge-table, .error-box, .empty', { timeout: 30000 });
  check(await page.$('#edge-table'), `no edges shown: ${await page.innerText('main')}`);
  for (const [p, c] of e.edges) {
    check(await page.$(`#edge-table tr[data-edge="${p}->${c}"]`), `edge ${p} -> ${c} not in the table`);
    check(await page.$(`#service-graph g.edge[data-edge="${p}->${c}"]`), `edge ${p} -> ${c} not drawn`);
  }
  await shot(page, 'graph');
});

// ---------------------------------------------------------------- big trace
if (EXPECT.big) await step('big-trace', async page => {
  const e = EXPECT.big;
  const bench = (name, ms) => { if (BENCH) console.log(JSON.stringify({ bench: `ui.big_trace.${name}`, ms: Math.round(ms * 10) / 10, spans: e.spanCount })); };
  await page.goto(`${BASE}/#/trace/${e.traceId}`);
  await page.waitForSelector('#timeline .vrow', { timeout: 60000 });
  const t = await page.evaluate(async () => {
    await new Promise(r => requestAnimationFrame(() => setTimeout(r)));
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    const mark = performance.getEntriesByName('strata:timeline-rendered')[0];
    const fetched = performance.getEntriesByName('strata:trace-fetched')[0];
    return { fcp: fcp && fcp.startTime, rendered: mark && mark.startTime, fetched: fetched && fetched.startTime };
  });
  check(t.rendered, 'the page did not mark strata:timeline-rendered');
  const n = +(await page.innerText('#trace-span-count'));
  check(n === e.spanCount, `span count shown ${n}, expected ${e.spanCount}`);
  bench('first_contentful_paint', t.fcp);
  bench('trace_fetched', t.fetched);
  bench('timeline_rendered', t.rendered);
  // timed interactions: each click plus the next frame
  const timed = sel => page.evaluate(async s => {
    const el = document.querySelector(s);
    if (!el) throw new Error(`no element ${s}`);
    const t0 = performance.now();
    el.click();
    await new Promise(r => requestAnimationFrame(() => setTimeout(r)));
    return performance.now() - t0;
  }, sel);
  bench('expand_all', await timed('#expand-all'));
  const all = await page.$$eval('#timeline .vrow', r => r.length);
  check(all > 10 && all < 400, `with ${e.spanCount} spans expanded the DOM holds ${all} rows (not virtual?)`);
  bench('collapse_root', await timed('#timeline .vrow[data-depth="0"] .tog'));
  check((await page.$$eval('#timeline .vrow', r => r.length)) === 1, 'collapsing the root leaves more than one row');
  bench('expand_root', await timed('#timeline .vrow[data-depth="0"] .tog'));
  bench('open_span_details', await timed('#timeline .vrow:nth-child(5) .nm'));
  check(await page.isVisible('#span-details'), 'span details did not open');
  // scroll to the end: rows there render
  const last = await page.evaluate(async () => {
    const sc = document.getElementById('timeline');
    sc.scrollTop = sc.scrollHeight;
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    return document.querySelectorAll('#timeline .vrow').length;
  });
  check(last > 10, 'no rows after scrolling to the end');
  await page.evaluate(() => { document.getElementById('timeline').scrollTop = 0; });
  await page.waitForTimeout(100);
  await shot(page, 'big-trace');
});

await browser.close();
if (failures.length) {
  console.error(`ui check: FAILED ${failures.length} step(s):\n- ${failures.join('\n- ')}`);
  process.exit(1);
}
log('all checks passed');
