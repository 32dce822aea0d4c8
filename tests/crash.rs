//! Durability: every acknowledged span survives `kill -9`, including kills in the middle of block cuts.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, request, span_count, trace_id};

#[test]
fn acknowledged_spans_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tmp");
    // Small blocks so cuts and uploads happen while the kill lands.
    let mut server = Server::start(&dir.path().join("data"), &[("STRATA_MAX_BLOCK_SPANS", "1000")]);
    let acked: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let mut next = 1u64;
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..3u64)
            .map(|w| {
                let (acked, stop) = (acked.clone(), stop.clone());
                let url = server.otlp_http.clone();
                let base = next + w * 1_000_000;
                std::thread::spawn(move || {
                    let client = common::http();
                    let mut t = base;
                    while !stop.load(Ordering::Relaxed) {
                        let body = prost::Message::encode_to_vec(&request(t, 5, 4, "crash"));
                        let ok = client
                            .post(format!("{url}/v1/traces"))
                            .header("Content-Type", "application/x-protobuf")
                            .body(body)
                            .send()
                            .is_ok_and(|r| r.status() == 200);
                        if ok {
                            acked.lock().expect("lock").extend(t..t + 5);
                        }
                        t += 5;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 150 * round));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            let _ = s.join();
        }
        next += 10_000_000;
        server.restart();
        // Each round checks what it acknowledged; the last round checks everything acknowledged in all rounds.
        let all = acked.lock().expect("lock").clone();
        let ids: Vec<u64> =
            if round == 2 { all } else { all.into_iter().filter(|t| *t >= next - 10_000_000).collect() };
        assert!(!ids.is_empty(), "round {round}: nothing was acknowledged");
        // Check every acknowledged trace, four lookups at a time.
        let chunks: Vec<Vec<u64>> = ids.chunks(ids.len().div_ceil(4)).map(<[u64]>::to_vec).collect();
        let srv = &server;
        let missing: Vec<u64> = std::thread::scope(|sc| {
            let hs: Vec<_> = chunks
                .into_iter()
                .map(|c| {
                    sc.spawn(move || {
                        c.into_iter()
                            .filter(|t| srv.trace(None, &trace_id(*t)).map(|r| span_count(&r)) != Some(4))
                            .collect::<Vec<u64>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        eprintln!("round {round}: {} acknowledged traces checked", ids.len());
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acknowledged traces lost or incomplete, e.g. {:?}\n{}",
            missing.len(),
            ids.len(),
            &missing[..missing.len().min(5)],
            server.logs()
        );
    }
}

/// Blocks with a meta.json (complete) on local disk, over all tenants.
fn complete_blocks(data: &std::path::Path) -> usize {
    let Ok(tenants) = std::fs::read_dir(data.join("blocks")) else { return 0 };
    tenants
        .flatten()
        .filter_map(|t| std::fs::read_dir(t.path()).ok())
        .flat_map(|b| b.flatten())
        .filter(|b| b.path().join("meta.json").exists())
        .count()
}

#[test]
fn replay_rebuilds_spans_as_validated() {
    // An all-zero parent ID means "no parent"; the span acknowledged is a root, and must still be one after the
    // WAL replays it (the WAL used to log the request as sent, zeros included).
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = Server::start(&dir.path().join("data"), &[("STRATA_MAX_BLOCK_AGE", "1h")]);
    let mut req = request(7, 1, 3, "replay");
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans[0].parent_span_id = vec![0; 8];
    let root_id = spans[0].span_id.clone();
    assert_eq!(server.post_otlp(None, &req), 200);
    let root_parent = |server: &Server| {
        let rs = server.trace(None, &trace_id(7)).expect("trace found");
        let spans: Vec<_> = rs.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        assert_eq!(spans.len(), 3);
        spans.iter().find(|s| s.span_id == root_id).expect("root span").parent_span_id.clone()
    };
    assert!(root_parent(&server).is_empty(), "before the crash");
    server.kill9();
    server.restart();
    assert!(root_parent(&server).is_empty(), "after replay the root has no parent");
}

#[test]
fn flush_waits_for_its_cut_even_when_the_wal_cannot_rotate() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let server = Server::start(&data, &[("STRATA_MAX_BLOCK_AGE", "1h")]);
    assert_eq!(server.post_otlp(None, &request(1, 5, 4, "flush")), 200);
    server.flush();
    assert_eq!(complete_blocks(&data), 1);
    // The next segment's name is taken by a directory: the WAL cannot rotate at the next cut.
    let wal = data.join("wal");
    let current: u64 = std::fs::read_dir(&wal)
        .expect("wal dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".wal")?.parse().ok())
        .max()
        .expect("a current segment");
    let blocker = wal.join(format!("{:020}.wal", current + 1));
    std::fs::create_dir(&blocker).expect("blocker");
    assert_eq!(server.post_otlp(None, &request(100, 5, 4, "flush")), 200);
    server.flush();
    // /flush returned: the second cut's block must be uploaded already.
    assert_eq!(complete_blocks(&data), 2, "flush returned before its block was uploaded");
    std::fs::remove_dir(&blocker).expect("remove blocker");
    assert_eq!(server.post_otlp(None, &request(200, 5, 4, "flush")), 200);
    server.flush();
    assert_eq!(complete_blocks(&data), 3);
    for t in [1, 100, 200] {
        assert!(server.trace(None, &trace_id(t)).is_some(), "trace {t}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

/// Spans stored for the default tenant, counted with SQL (which, unlike search and trace by ID, does not merge
/// duplicate copies of a span).
fn stored_spans(server: &Server) -> u64 {
    let r = common::http().post(format!("{}/api/sql", server.api)).body("SELECT count(*) AS n FROM spans").send();
    let text = r.expect("sql").text().expect("body");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_else(|_| panic!("rows: {text}"));
    rows[0]["n"].as_u64().unwrap_or_else(|| panic!("count: {text}"))
}

#[test]
fn a_crash_between_upload_and_wal_cleanup_does_not_duplicate_spans() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[("STRATA_MAX_BLOCK_AGE", "1h")]);
    assert_eq!(server.post_otlp(None, &request(1, 10, 4, "dup")), 200);
    assert_eq!(server.post_otlp(Some("other"), &request(50, 2, 3, "dup")), 200);
    // The WAL as it is before the upload...
    server.kill9();
    let saved = dir.path().join("wal-before-upload");
    copy_dir(&data.join("wal"), &saved);
    server.restart();
    server.flush();
    assert_eq!(stored_spans(&server), 40);
    // ...comes back after it, as if the process died after the upload but before deleting the segments.
    server.kill9();
    std::fs::remove_dir_all(data.join("wal")).expect("rm wal");
    copy_dir(&saved, &data.join("wal"));
    server.restart();
    assert_eq!(stored_spans(&server), 40, "replay must not add the uploaded spans again");
    server.flush();
    assert_eq!(stored_spans(&server), 40, "nor a second block hold them");
    assert_eq!(server.trace(Some("other"), &trace_id(50)).map(|rs| span_count(&rs)), Some(3));
}

#[test]
fn a_tenant_whose_blocks_cannot_be_uploaded_does_not_stall_the_others() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let server = Server::start(&data, &[("STRATA_MAX_BLOCK_AGE", "1h"), ("STRATA_COMPACTION", "false")]);
    // A file where tenant "stuck"'s block folder must go: its uploads fail until it is removed.
    let blocks = data.join("blocks");
    std::fs::create_dir_all(&blocks).expect("blocks dir");
    let blocker = blocks.join("stuck");
    std::fs::write(&blocker, b"not a directory").expect("blocker");
    assert_eq!(server.post_otlp(Some("stuck"), &request(1, 3, 2, "s")), 200);
    let api = server.api.clone();
    let first = std::thread::spawn(move || common::http().post(format!("{api}/flush")).send().map(|r| r.status()));
    // The stuck tenant is refused while its block fails; another tenant is still served and flushed.
    let start = std::time::Instant::now();
    while server.post_otlp(Some("stuck"), &request(9, 1, 1, "s")) != 503 {
        assert!(start.elapsed() < Duration::from_secs(30), "the failing tenant was never refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.post_otlp(Some("fine"), &request(100, 3, 2, "f")), 200);
    let api = server.api.clone();
    let second = std::thread::spawn(move || common::http().post(format!("{api}/flush")).send().map(|r| r.status()));
    let start = std::time::Instant::now();
    while !blocks.join("fine").exists() || complete_blocks(&data) < 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "the healthy tenant's block waited for the stuck one");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.trace(Some("fine"), &trace_id(100)).map(|rs| span_count(&rs)), Some(2));
    assert!(!first.is_finished() && !second.is_finished(), "flush returns only once every earlier cut is stored");
    std::fs::remove_file(&blocker).expect("remove blocker");
    assert!(first.join().expect("flush").expect("flush request").is_success());
    assert!(second.join().expect("flush").expect("flush request").is_success());
    assert_eq!(server.trace(Some("stuck"), &trace_id(1)).map(|rs| span_count(&rs)), Some(2));
    assert_eq!(server.post_otlp(Some("stuck"), &request(9, 1, 1, "s")), 200);
}

/// Blocks (on local disk) whose trace-ID range covers `id`.
fn blocks_covering(data: &std::path::Path, id: &[u8]) -> usize {
    let want = hex::encode(id);
    let Ok(tenants) = std::fs::read_dir(data.join("blocks")) else { return 0 };
    tenants
        .flatten()
        .filter_map(|t| std::fs::read_dir(t.path()).ok())
        .flat_map(|b| b.flatten())
        .filter_map(|b| std::fs::read(b.path().join("meta.json")).ok())
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m).ok())
        .filter(|m| {
            let (lo, hi) = (m["minTraceId"].as_str().unwrap_or(""), m["maxTraceId"].as_str().unwrap_or(""));
            lo <= want.as_str() && want.as_str() <= hi
        })
        .count()
}

#[test]
fn a_trace_still_receiving_spans_stays_out_of_cuts_until_idle() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut server = Server::start(
        &data,
        &[("STRATA_MAX_BLOCK_AGE", "1s"), ("STRATA_MAX_TRACE_IDLE", "2s"), ("STRATA_COMPACTION", "false")],
    );
    // Trace 1 gets one request; trace 2 keeps receiving spans across several cuts.
    assert_eq!(server.post_otlp(None, &request(1, 1, 3, "idle")), 200);
    let mut sent = 0usize;
    for round in 0..10u64 {
        let mut req = request(2, 1, 2, "busy");
        for s in &mut req.resource_spans[0].scope_spans[0].spans {
            s.span_id[0] += (round * 2) as u8;
        }
        assert_eq!(server.post_otlp(None, &req), 200);
        sent += 2;
        std::thread::sleep(Duration::from_millis(300));
        if round == 6 {
            // A crash after the busy trace was carried over a cut: its spans come back from the WAL.
            server.kill9();
            server.restart();
        }
    }
    let start = std::time::Instant::now();
    while blocks_covering(&data, &trace_id(2)) == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "the busy trace was never cut");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(blocks_covering(&data, &trace_id(1)) >= 1, "the idle trace was cut first");
    server.flush();
    assert_eq!(blocks_covering(&data, &trace_id(2)), 1, "the busy trace landed in one block");
    assert_eq!(server.trace(None, &trace_id(2)).map(|rs| span_count(&rs)), Some(sent));
    assert_eq!(server.trace(None, &trace_id(1)).map(|rs| span_count(&rs)), Some(3));
}

#[test]
fn a_block_that_cannot_be_read_makes_a_lookup_partial_not_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[("STRATA_MAX_BLOCK_AGE", "1h"), ("STRATA_COMPACTION", "false")]);
    // Trace 5 in two blocks: spans 1-2 in the first, two more (other span IDs) in the second.
    assert_eq!(server.post_otlp(None, &request(5, 1, 2, "a")), 200);
    server.flush();
    let mut second = request(5, 1, 2, "b");
    for s in &mut second.resource_spans[0].scope_spans[0].spans {
        s.span_id[0] += 10;
    }
    assert_eq!(server.post_otlp(None, &second), 200);
    server.flush();
    // The first block's data goes missing (its meta and bloom stay).
    server.kill9();
    let first_block = std::fs::read_dir(data.join("blocks/single-tenant"))
        .expect("tenant dir")
        .flatten()
        .filter(|e| e.path().join("meta.json").exists())
        .min_by_key(|e| std::fs::metadata(e.path().join("meta.json")).and_then(|m| m.modified()).ok())
        .expect("a block")
        .path();
    std::fs::remove_file(first_block.join("data.parquet")).expect("remove data");
    server.restart();
    let r =
        common::http().get(format!("{}/api/v2/traces/{}", server.api, hex::encode(trace_id(5)))).send().expect("get");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().expect("json");
    assert_eq!(body["status"], "PARTIAL", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let spans: usize = body["trace"]["resourceSpans"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
        .map(|ss| ss["spans"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(spans, 2, "the readable block's spans are returned");
    // A trace only in the unreadable block is an error, not a "not found".
    assert!(server.trace(None, &trace_id(6)).is_none(), "a trace in no block is still 404");
}
