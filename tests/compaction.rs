//! Block life cycle on a real S3 server (moto): compaction merges blocks whose traces are split across them into
//! whole traces without losing or duplicating a span, survives kill -9 at any moment, keeps two compactors apart,
//! deletes what it replaced after the grace period; retention deletes old blocks; a second process on the same
//! bucket sees blocks the first one writes.

mod common;

use std::time::{Duration, Instant};

use common::{S3Server, Server, http, request, span_count, trace_id};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

const TRACES: u64 = 40;
const SPANS: u64 = 4;

fn s3_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("STRATA_STORAGE", "s3"),
        ("STRATA_S3_ENDPOINT", endpoint),
        ("STRATA_S3_BUCKET", "life"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("STRATA_MAX_BLOCK_AGE", "1h"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn start(data: &std::path::Path, base: &[(String, String)], extra: &[(&str, &str)]) -> Server {
    let mut env: Vec<(&str, &str)> = base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    Server::start(data, &env)
}

/// Round `round` of every trace: SPANS new spans (distinct IDs per round) under the root sent in round 0, so
/// each trace ends up split over as many blocks as there are rounds.
fn fragment(round: u64) -> ExportTraceServiceRequest {
    let mut req = request(1, TRACES, SPANS, "frag");
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        if round > 0 {
            let root = {
                let mut r = s.span_id.clone();
                r[0] = 1;
                r
            };
            s.span_id[0] += (round * SPANS) as u8;
            s.parent_span_id = root;
            s.start_time_unix_nano += round * 10;
            s.end_time_unix_nano += round * 10;
        }
    }
    req
}

fn sql_count(server: &Server, statement: &str) -> u64 {
    let r = http().post(format!("{}/api/sql", server.api)).body(statement.to_string()).send().expect("sql");
    let text = r.text().expect("body");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{statement}: {text}"));
    rows[0]["n"].as_u64().unwrap_or_else(|| panic!("{statement}: {text}"))
}

fn stored_spans(server: &Server) -> u64 {
    sql_count(server, "SELECT count(*) AS n FROM spans")
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = http().get(format!("{}/metrics", server.api)).send().expect("metrics").text().expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every trace whole: by ID (all rounds' spans, once each) and in search results.
fn assert_traces_whole(server: &Server, rounds: u64) {
    for t in 1..=TRACES {
        let got = server.trace(None, &trace_id(t)).map(|rs| span_count(&rs));
        assert_eq!(got, Some((rounds * SPANS) as usize), "trace {t}");
    }
    assert_eq!(stored_spans(server), rounds * SPANS * TRACES, "every span stored exactly once");
    let r = http()
        .get(format!("{}/api/search", server.api))
        .query(&[("q", format!("{{ }} | count() = {}", rounds * SPANS)), ("limit", "1000".into())])
        .send()
        .expect("search");
    let body: serde_json::Value = r.json().expect("search json");
    assert_eq!(body["traces"].as_array().map(Vec::len), Some(TRACES as usize), "search sees whole traces: {body}");
}

/// A moto server with the test bucket, a scratch directory, and the environment pointing Strata at them.
fn bucket() -> (S3Server, tempfile::TempDir, Vec<(String, String)>) {
    let s3 = S3Server::start();
    s3.create_bucket("life");
    let env = s3_env(&s3.endpoint);
    (s3, tempfile::tempdir().expect("tmp"), env)
}

fn meta_keys(s3: &S3Server) -> Vec<String> {
    s3.keys("life").into_iter().filter(|k| k.ends_with("/meta.json")).collect()
}

#[test]
fn compaction_joins_split_traces_and_deletes_what_it_replaced() {
    let (s3, dir, env) = bucket();
    let server = start(
        &dir.path().join("data"),
        &env,
        &[("STRATA_COMPACTION_INTERVAL", "300ms"), ("STRATA_COMPACTION_GRACE", "1s")],
    );
    let rounds = 5;
    for r in 0..rounds {
        assert_eq!(server.post_otlp(None, &fragment(r)), 200);
        server.flush();
    }
    // A retried export: the same spans again, in one more block.
    assert_eq!(server.post_otlp(None, &fragment(0)), 200);
    server.flush();
    wait_for("compaction into one block", Duration::from_secs(60), || metric(&server, "strata_blocks") == 1.0);
    assert!(metric(&server, "strata_compactions_total") >= 1.0);
    assert_traces_whole(&server, rounds);
    // After the grace period only the compacted block is left in the bucket.
    wait_for("replaced blocks deleted", Duration::from_secs(60), || meta_keys(&s3).len() == 1);
    let keys = s3.keys("life");
    let data_objects = keys.iter().filter(|k| k.ends_with("/data.parquet")).count();
    assert_eq!(data_objects, 1, "{keys:?}");
    assert_traces_whole(&server, rounds);
}

#[test]
fn kill_9_during_compaction_loses_and_duplicates_nothing() {
    let (_s3, dir, env) = bucket();
    let extra = [
        ("STRATA_COMPACTION_INTERVAL", "100ms"),
        ("STRATA_COMPACTION_GRACE", "1s"),
        ("STRATA_COMPACTION_MIN_INPUTS", "2"),
    ];
    let mut server = start(&dir.path().join("data"), &env, &extra);
    let rounds = 8;
    for r in 0..rounds {
        assert_eq!(server.post_otlp(None, &fragment(r)), 200);
        server.flush();
    }
    // Kill at different moments of the merges, restart each time.
    for pause in [50u64, 120, 200, 350, 500] {
        std::thread::sleep(Duration::from_millis(pause));
        server.kill9();
        server.restart();
        assert_eq!(stored_spans(&server), rounds * SPANS * TRACES, "after a kill {pause} ms into compaction");
    }
    wait_for("compaction to settle", Duration::from_secs(60), || metric(&server, "strata_blocks") == 1.0);
    assert_traces_whole(&server, rounds);
}

#[test]
fn two_compactors_on_one_bucket_do_not_duplicate_data() {
    let (s3, dir, env) = bucket();
    // The ingesting process does not compact; two compactor processes race over its blocks.
    let server =
        start(&dir.path().join("main"), &env, &[("STRATA_COMPACTION", "false"), ("STRATA_BLOCKLIST_REFRESH", "300ms")]);
    let compactors: Vec<Server> = (0..2)
        .map(|i| {
            start(
                &dir.path().join(format!("compactor{i}")),
                &env,
                &[
                    ("STRATA_TARGET", "compactor"),
                    ("STRATA_COMPACTION_INTERVAL", "100ms"),
                    ("STRATA_COMPACTION_GRACE", "2s"),
                    ("STRATA_COMPACTION_MIN_INPUTS", "2"),
                    ("STRATA_BLOCKLIST_REFRESH", "200ms"),
                ],
            )
        })
        .collect();
    let rounds = 8;
    for r in 0..rounds {
        assert_eq!(server.post_otlp(None, &fragment(r)), 200);
        server.flush();
    }
    wait_for("compaction by the compactor processes", Duration::from_secs(90), || {
        metric(&server, "strata_blocks") == 1.0
    });
    assert_traces_whole(&server, rounds);
    let merges: f64 = compactors.iter().map(|c| metric(c, "strata_compactions_total")).sum();
    assert!(merges >= 1.0, "the compactors merged nothing");
    wait_for("replaced blocks deleted", Duration::from_secs(60), || meta_keys(&s3).len() == 1);
    assert_traces_whole(&server, rounds);
}

#[test]
fn retention_deletes_exactly_the_blocks_past_it() {
    let (s3, dir, env) = bucket();
    let server = start(
        &dir.path().join("data"),
        &env,
        &[("STRATA_RETENTION", "1d"), ("STRATA_COMPACTION_INTERVAL", "300ms"), ("STRATA_COMPACTION_MIN_INPUTS", "100")],
    );
    // `request` stamps spans in November 2023: past a one-day retention.
    assert_eq!(server.post_otlp(None, &request(1, 3, 2, "old")), 200);
    server.flush();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    let mut fresh = request(100, 3, 2, "new");
    for s in &mut fresh.resource_spans[0].scope_spans[0].spans {
        let d = s.end_time_unix_nano - s.start_time_unix_nano;
        s.start_time_unix_nano = now - 60_000_000_000;
        s.end_time_unix_nano = s.start_time_unix_nano + d;
    }
    assert_eq!(server.post_otlp(None, &fresh), 200);
    server.flush();
    wait_for("the old block to expire", Duration::from_secs(30), || server.trace(None, &trace_id(1)).is_none());
    for t in 100..103 {
        assert_eq!(server.trace(None, &trace_id(t)).map(|rs| span_count(&rs)), Some(2), "fresh trace {t}");
    }
    assert_eq!(metric(&server, "strata_blocks"), 1.0);
    assert_eq!(meta_keys(&s3).len(), 1, "the expired block's meta is gone from the bucket");
}

#[test]
fn a_second_process_sees_blocks_the_first_writes() {
    let (_s3, dir, env) = bucket();
    let writer = start(&dir.path().join("a"), &env, &[("STRATA_COMPACTION", "false")]);
    let reader =
        start(&dir.path().join("b"), &env, &[("STRATA_COMPACTION", "false"), ("STRATA_BLOCKLIST_REFRESH", "300ms")]);
    assert!(reader.trace(None, &trace_id(7)).is_none());
    assert_eq!(writer.post_otlp(None, &request(7, 1, 3, "w")), 200);
    writer.flush();
    wait_for("the reader to see the new block", Duration::from_secs(30), || {
        reader.trace(None, &trace_id(7)).map(|rs| span_count(&rs)) == Some(3)
    });
}

#[test]
fn concurrent_writers_keep_every_block_in_the_tenant_index() {
    let (s3, dir, env) = bucket();
    // No block list refresh during the test: each process knows only its own blocks, so only the merge done by
    // the conditional index write can keep the other's.
    let opts = [("STRATA_COMPACTION", "false"), ("STRATA_BLOCKLIST_REFRESH", "1h")];
    let a = start(&dir.path().join("a"), &env, &opts);
    let b = start(&dir.path().join("b"), &env, &opts);
    for r in 0..3 {
        assert_eq!(a.post_otlp(None, &request(10 + r, 1, 2, "a")), 200);
        a.flush();
        assert_eq!(b.post_otlp(None, &request(20 + r, 1, 2, "b")), 200);
        b.flush();
    }
    let blocks: std::collections::BTreeSet<String> =
        meta_keys(&s3).iter().filter_map(|k| k.rsplit('/').nth(1).map(str::to_string)).collect();
    assert_eq!(blocks.len(), 6, "{blocks:?}");
    let key = s3.keys("life").into_iter().find(|k| k.ends_with("/index.json")).expect("index.json written");
    let index: serde_json::Value = serde_json::from_slice(&s3.get("life", &key)).expect("index.json is JSON");
    let listed: std::collections::BTreeSet<String> = index["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|m| m["blockId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(listed, blocks, "index.json names every block of both writers");
}

#[test]
fn compaction_keeps_every_trace_identical_copied_or_rebuilt() {
    // Blocks holding both traces found in one block only (their rows are copied by compaction) and traces split
    // over every block (rebuilt), interleaved in trace-ID order.
    let (s3, dir, env) = bucket();
    let data = dir.path().join("data");
    let rounds = 3u64;
    let whole: Vec<u64> = (0..rounds).flat_map(|r| (0..30).map(move |i| 1000 * (r + 1) + i)).collect();
    let mut ids: Vec<u64> = (1..=TRACES).chain(whole.iter().copied()).collect();
    ids.sort_unstable();
    let before = {
        let server = start(&data, &env, &[("STRATA_COMPACTION", "false")]);
        for r in 0..rounds {
            assert_eq!(server.post_otlp(None, &request(1000 * (r + 1), 30, 5, &format!("svc-{r}"))), 200);
            assert_eq!(server.post_otlp(None, &fragment(r)), 200);
            server.flush();
        }
        assert!(meta_keys(&s3).len() >= rounds as usize);
        ids.iter().map(|t| server.trace(None, &trace_id(*t))).collect::<Vec<_>>()
    };
    let server = start(&data, &env, &[("STRATA_COMPACTION_INTERVAL", "300ms"), ("STRATA_COMPACTION_GRACE", "1s")]);
    wait_for("one block", Duration::from_secs(60), || meta_keys(&s3).len() == 1);
    assert!(metric(&server, "strata_compaction_copied_traces_total") >= whole.len() as f64, "unsplit traces copied");
    let after: Vec<_> = ids.iter().map(|t| server.trace(None, &trace_id(*t))).collect();
    for ((t, b), a) in ids.iter().zip(&before).zip(&after) {
        assert!(b.is_some(), "trace {t} stored");
        assert_eq!(a, b, "trace {t} changed in compaction");
    }
    let spans = rounds * SPANS * TRACES + whole.len() as u64 * 5;
    assert_eq!(stored_spans(&server), spans, "every span stored exactly once");
    let r = http()
        .get(format!("{}/api/search", server.api))
        .query(&[("q", "{ resource.service.name =~ \"svc-.*\" && span.i = 4 }"), ("limit", "1000")])
        .send()
        .expect("search");
    let body: serde_json::Value = r.json().expect("search json");
    assert_eq!(body["traces"].as_array().map(Vec::len), Some(whole.len()), "copied traces are searchable: {body}");
}
