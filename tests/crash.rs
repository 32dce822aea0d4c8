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
