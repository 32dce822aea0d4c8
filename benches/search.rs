//! TraceQL search, tag and freshness benchmark against the real `strata` binary (release build).
//!
//! `cargo bench --bench search -- --traces 100000` ingests the ingest benchmark's generated traces (same seed),
//! flushes them into blocks, restarts the server (so peak RSS reflects queries, not ingest), and times each query
//! kind with `limit=20` and with every match returned: p50/p99 latency, object-store bytes and GETs per query, then
//! tag values, then how long a freshly acknowledged span takes to become searchable. `--data DIR` keeps the data
//! set between runs (ingested once); `--s3` stores blocks in a moto S3 server.

#[path = "common/gen.rs"]
mod generator;
#[path = "common/proc.rs"]
mod proc;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use proc::{free_port, metric, percentile, start, status_kb};
use prost::Message;

#[derive(Parser, Debug)]
struct Args {
    /// Traces in the data set (about 8 spans each).
    #[arg(long, default_value_t = 100_000)]
    traces: usize,
    /// Timed runs per query (after one warm-up run).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Keep the data set here (ingested on first use, reused afterwards).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Store blocks in a moto S3 server (moto_server must be on PATH).
    #[arg(long)]
    s3: bool,
    /// Measure after compaction merged the data set's blocks into one (on a copy; the kept data set stays as
    /// flushed). Without it compaction is off, so the layout measured is the flushed one.
    #[arg(long)]
    compacted: bool,
    /// Only the TraceQL metrics queries (skips searches, tag values and freshness).
    #[arg(long)]
    metrics_only: bool,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Query kinds and the query that stands for each.
const QUERIES: &[(&str, &str)] = &[
    ("service (own column)", r#"{ resource.service.name = "payment" }"#),
    ("span attribute, selective", r#"{ span.enduser.id = "user-4242" }"#),
    ("span attribute, broad", r#"{ span.http.response.status_code = 503 }"#),
    ("name regex", r#"{ name =~ "POST /payment.*" }"#),
    ("duration range", "{ duration > 400ms && duration < 405ms }"),
    (
        "structural",
        r#"{ resource.service.name = "checkout" } >> { resource.service.name = "payment" && status = error }"#,
    ),
    ("pipeline", r#"{ resource.service.name = "frontend" } | avg(duration) > 400ms"#),
    ("match all", "{ }"),
];

const TAG_VALUES: &[(&str, &str, &str)] = &[
    ("service names", "resource.service.name", ""),
    ("span attribute, 50k values", "span.enduser.id", ""),
    ("routes, narrowed by q", "span.http.route", r#"{ resource.service.name = "payment" }"#),
    ("status", "status", ""),
];

/// TraceQL metrics queries (issue targets; the data set's status attribute is `http.response.status_code`).
const METRICS: &[(&str, &str)] = &[
    ("rate by service", "{ } | rate() by (resource.service.name)"),
    (
        "quantiles by name, filtered",
        "{ span.http.response.status_code >= 500 } | quantile_over_time(duration, .5, .99) by (name)",
    ),
    ("error rate by service", "{ status = error } | rate() by (resource.service.name)"),
    ("histogram", "{ } | histogram_over_time(duration)"),
];

/// The generator's traces start in the minute before this instant (`common/gen.rs`).
const DATA_END_S: u64 = 1_763_900_000;

struct Sample {
    ms: Vec<f64>,
    bytes: f64,
    gets: f64,
    results: usize,
}

/// Runs `call` once to warm up, then `runs` times; `call` returns its result count and its latency in ms.
fn timed(api: &str, runs: usize, mut call: impl FnMut() -> (usize, f64)) -> Sample {
    call();
    let (b0, g0) = (metric(api, "strata_object_store_read_bytes_total"), metric(api, "strata_object_store_gets_total"));
    let mut ms = Vec::with_capacity(runs);
    let mut results = 0;
    for _ in 0..runs {
        let (n, took) = call();
        results = n;
        ms.push(took);
    }
    let (b1, g1) = (metric(api, "strata_object_store_read_bytes_total"), metric(api, "strata_object_store_gets_total"));
    ms.sort_by(|a, b| a.total_cmp(b));
    Sample { ms, bytes: (b1 - b0) / runs as f64, gets: (g1 - g0) / runs as f64, results }
}

thread_local! {
    /// The last answer's buffer, reused by the next [`received`].
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Sends `req`, reads the whole answer and parses it with `parse`; returns what `parse` returns and the latency in
/// ms, from sending to the last byte. The client's parsing is not timed (parsing a 100 MB answer took this client
/// ~0.25 s on top, on the same two cores; sessions before 10 timed it), and the body is read into the previous
/// call's buffer, as `curl` would (a fresh buffer grown to 100 MB cost ~0.2 s of page faults and copies).
fn received<T>(req: reqwest::blocking::RequestBuilder, what: &str, parse: impl FnOnce(&[u8]) -> T) -> (T, f64) {
    use std::io::Read;
    let mut body = BUFFER.with_borrow_mut(std::mem::take);
    body.clear();
    let t = Instant::now();
    let mut r = req.send().expect(what);
    assert!(r.status().is_success(), "{what}: {}", r.status());
    r.read_to_end(&mut body).expect("body");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let parsed = parse(&body);
    BUFFER.with_borrow_mut(|b| *b = body);
    (parsed, ms)
}

fn search(client: &reqwest::blocking::Client, api: &str, q: &str, limit: usize) -> (usize, f64) {
    let req = client.get(format!("{api}/api/search")).query(&[("q", q), ("limit", &limit.to_string()), ("spss", "3")]);
    // Parsed whole (the answer must be JSON), but into nothing.
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        traces: Vec<serde::de::IgnoredAny>,
    }
    received(req, q, |body| serde_json::from_slice::<Answer>(body).expect("json").traces.len())
}

/// Files called `name` under `dir`, recursively.
fn count_named(dir: &std::path::Path, name: &str) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_named(&p, name) } else { usize::from(e.file_name() == name) }
        })
        .sum()
}

fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("tmp");
    let data = args.data.clone().unwrap_or_else(|| tmp.path().join("data"));
    let (_moto, mut env) = if args.s3 {
        let (moto, env) = proc::start_moto();
        (Some(moto), env)
    } else {
        (None, Vec::new())
    };
    env.push(("STRATA_COMPACTION".into(), "false".into()));
    let ports = (free_port(), free_port(), free_port());

    let have_blocks = data.join("blocks").read_dir().is_ok_and(|mut d| d.next().is_some());
    if !have_blocks || args.s3 {
        eprintln!("generating and ingesting {} traces...", args.traces);
        let (reqs, _) = generator::requests(42, args.traces, 100);
        let server = start(&data, ports, &env);
        let url = format!("http://127.0.0.1:{}/v1/traces", ports.1);
        let failed = proc::post_all(&url, reqs.into_iter().map(|r| bytes::Bytes::from(r.encode_to_vec())), 8);
        assert_eq!(failed, 0, "ingest requests failed");
        let r = reqwest::blocking::Client::new().post(format!("{}/flush", server.api)).send().expect("flush");
        assert!(r.status().is_success());
        drop(server);
    }

    let data = if args.compacted {
        // Compact a copy into one block first, with a process of its own.
        let copy = tmp.path().join("compacted");
        let ok = std::process::Command::new("cp").arg("-r").arg(&data).arg(&copy).status().is_ok_and(|s| s.success());
        assert!(ok, "copying the data set");
        let mut cenv: Vec<(String, String)> = env.iter().filter(|(k, _)| k != "STRATA_COMPACTION").cloned().collect();
        cenv.extend([
            ("STRATA_COMPACTION_INTERVAL".to_string(), "1s".to_string()),
            ("STRATA_COMPACTION_MIN_INPUTS".to_string(), "2".to_string()),
            ("STRATA_COMPACTION_MAX_INPUTS".to_string(), "64".to_string()),
            ("STRATA_COMPACTION_GRACE".to_string(), "1s".to_string()),
        ]);
        let before = proc::dir_size(&copy.join("blocks"));
        let compactor = start(&copy, ports, &cenv);
        let pid = compactor.child.id();
        let cpu0 = proc::cpu_seconds(pid);
        let t = Instant::now();
        while metric(&compactor.api, "strata_blocks") != 1.0 {
            assert!(t.elapsed() < Duration::from_secs(1800), "compaction did not finish");
            std::thread::sleep(Duration::from_millis(200));
        }
        let (wall, cpu) = (t.elapsed().as_secs_f64(), proc::cpu_seconds(pid) - cpu0);
        let spans = metric(&compactor.api, "strata_compacted_spans_total");
        // Replaced blocks go after the 1 s grace period.
        let metas = |d: &std::path::Path| count_named(d, "meta.json");
        while metas(&copy.join("blocks")) > 1 {
            assert!(t.elapsed() < Duration::from_secs(1900), "replaced blocks were not deleted");
            std::thread::sleep(Duration::from_millis(200));
        }
        let after = proc::dir_size(&copy.join("blocks"));
        println!(
            "compaction: {spans} spans written (all levels) in {wall:.1} s wall, {cpu:.2} s CPU = {:.2} us CPU per \
             span written; blocks {before} B -> {after} B ({:.3}x)\n",
            cpu * 1e6 / spans.max(1.0),
            after as f64 / before.max(1) as f64
        );
        drop(compactor);
        copy
    } else {
        data
    };
    // A fresh process: blooms load at start-up, footers and tag caches fill on first use.
    let server = start(&data, ports, &env);
    let api = server.api.clone();
    let pid = server.child.id();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().expect("client");
    let spans = metric(&api, "strata_blocks");
    println!("blocks: {spans}, RSS after start: {} MB", status_kb(pid, "VmRSS:") / 1024);

    println!("\n| metrics query (range 80 s, step 5 s) | p50 ms | p99 ms | series | bytes read/query |");
    println!("|---|---|---|---|---|");
    for (kind, q) in METRICS {
        let s = timed(&api, args.runs, || {
            let (start, end) = ((DATA_END_S - 70).to_string(), (DATA_END_S + 10).to_string());
            let req = client.get(format!("{api}/api/metrics/query_range")).query(&[
                ("q", *q),
                ("start", &start),
                ("end", &end),
                ("step", "5s"),
            ]);
            received(req, q, |body| {
                let v: serde_json::Value = serde_json::from_slice(body).expect("json");
                v["series"].as_array().map_or(0, Vec::len)
            })
        });
        println!(
            "| {kind}: `{q}` | {:.1} | {:.1} | {} | {:.0} |",
            percentile(&s.ms, 0.5),
            percentile(&s.ms, 0.99),
            s.results,
            s.bytes
        );
    }
    if args.metrics_only {
        println!("server peak RSS during queries: {} MB", status_kb(pid, "VmHWM:") / 1024);
        return;
    }

    println!("\n| query | limit | p50 ms | p99 ms | results | bytes read/query | GETs/query |");
    println!("|---|---|---|---|---|---|---|");
    for (kind, q) in QUERIES {
        for limit in [20usize, 100_000] {
            let s = timed(&api, args.runs, || search(&client, &api, q, limit));
            println!(
                "| {kind}: `{q}` | {} | {:.1} | {:.1} | {} | {:.0} | {:.1} |",
                if limit == 20 { "20".to_string() } else { "all".to_string() },
                percentile(&s.ms, 0.5),
                percentile(&s.ms, 0.99),
                s.results,
                s.bytes,
                s.gets,
            );
        }
    }

    println!("\n| tag values | p50 ms | p99 ms | values |");
    println!("|---|---|---|---|");
    for (kind, tag, q) in TAG_VALUES {
        let s = timed(&api, args.runs, || {
            let req = client.get(format!("{api}/api/v2/search/tag/{tag}/values")).query(&[("q", *q)]);
            // Counted without building a `serde_json::Value` per value (as for searches): for 43k values the
            // tree cost the client about as long as the server took to answer.
            #[derive(serde::Deserialize)]
            struct Values {
                #[serde(default, rename = "tagValues")]
                tag_values: Vec<serde::de::IgnoredAny>,
            }
            received(req, tag, |body| serde_json::from_slice::<Values>(body).expect("json").tag_values.len())
        });
        println!(
            "| {kind} (`{tag}`{}) | {:.1} | {:.1} | {} |",
            if q.is_empty() { String::new() } else { format!(", q=`{q}`") },
            percentile(&s.ms, 0.5),
            percentile(&s.ms, 0.99),
            s.results
        );
    }

    // Freshness: acknowledged spans must be searchable at once.
    let mut fresh = Vec::new();
    let otlp = format!("http://127.0.0.1:{}/v1/traces", ports.1);
    for n in 0..20u64 {
        // A new trace ID every run: a kept data set already holds earlier runs' traces, and a span sent again
        // under the same IDs is a duplicate (the first copy wins).
        let seed = u64::from(std::process::id()) << 20 | n;
        let (mut reqs, _) = generator::requests(seed, 1, 1);
        let nonce = format!("fresh-{n}-{}", std::process::id());
        for rs in &mut reqs[0].resource_spans {
            for ss in &mut rs.scope_spans {
                for sp in &mut ss.spans {
                    sp.attributes.push(opentelemetry_proto::tonic::common::v1::KeyValue {
                        key: "bench.nonce".into(),
                        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                            value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                nonce.clone(),
                            )),
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        let r = client
            .post(&otlp)
            .header("Content-Type", "application/x-protobuf")
            .body(reqs[0].encode_to_vec())
            .send()
            .expect("post");
        assert!(r.status().is_success());
        let acked = Instant::now();
        let q = format!(r#"{{ span.bench.nonce = "{nonce}" }}"#);
        while search(&client, &api, &q, 20).0 == 0 {
            assert!(acked.elapsed() < Duration::from_secs(10), "span not searchable after 10 s");
        }
        fresh.push(acked.elapsed().as_secs_f64() * 1000.0);
    }
    fresh.sort_by(|a, b| a.total_cmp(b));
    println!(
        "\nacknowledged span found by search after: p50 {:.1} ms, max {:.1} ms (20 spans)",
        percentile(&fresh, 0.5),
        fresh.last().copied().unwrap_or(0.0)
    );
    println!("server peak RSS during queries: {} MB", status_kb(pid, "VmHWM:") / 1024);
}
