//! Real S3 protocol: Strata against an S3 server (moto) on loopback. Blocks, blooms and metas land under the
//! tenant's prefix; traces come back from the bucket after a restart with the local data dir wiped; uploads
//! that fail are retried while ingest says 503, and succeed once the store is back.

mod common;

use std::time::{Duration, Instant};

use common::{S3Server, Server, http, request, span_count, trace_id};

fn s3_env<'a>(endpoint: &'a str, bucket: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("STRATA_STORAGE", "s3"),
        ("STRATA_S3_ENDPOINT", endpoint),
        ("STRATA_S3_BUCKET", bucket),
        ("STRATA_S3_PREFIX", "strata/prod"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
}

#[test]
fn blocks_land_in_the_bucket_and_survive_a_wiped_data_dir() {
    let s3 = S3Server::start();
    s3.create_bucket("traces");
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let env = s3_env(&s3.endpoint, "traces");
    let mut server = Server::start(&data, &env);

    assert_eq!(server.post_otlp(Some("acme"), &request(1, 10, 3, "shop")), 200);
    server.flush();
    let keys = s3.keys("traces");
    for object in ["data.parquet", "bloom", "meta.json"] {
        assert!(
            keys.iter().any(|k| k.starts_with("strata/prod/acme/") && k.ends_with(object)),
            "no {object} under the tenant prefix: {keys:?}"
        );
    }
    assert!(keys.contains(&"strata/prod/acme/index.json".to_string()), "{keys:?}");

    // More data that only SIGTERM flushes.
    assert_eq!(server.post_otlp(Some("acme"), &request(100, 10, 2, "shop")), 200);
    server.terminate();
    std::fs::remove_dir_all(&data).expect("wipe data dir");
    server.restart();
    for t in 1..11 {
        assert_eq!(server.trace(Some("acme"), &trace_id(t)).map(|r| span_count(&r)), Some(3), "trace {t}");
    }
    for t in 100..110 {
        assert_eq!(server.trace(Some("acme"), &trace_id(t)).map(|r| span_count(&r)), Some(2), "trace {t}");
    }
    assert!(server.trace(Some("other"), &trace_id(1)).is_none());
}

#[test]
fn failing_store_answers_503_and_uploads_are_retried() {
    // Strata starts against an endpoint where nothing listens yet.
    let port = common::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tmp");
    let env = s3_env(&endpoint, "late");
    let data = dir.path().join("data");
    // Startup lists the bucket, so the S3 server must be up for it; it goes away right after.
    let s3 = S3Server::start_on(port);
    s3.create_bucket("late");
    let server = Server::start(&data, &env);
    drop(s3);

    assert_eq!(server.post_otlp(None, &request(1, 5, 2, "svc")), 200);
    // The flush cannot finish while the store is down: ask for it in the background.
    let api = server.api.clone();
    let flusher = std::thread::spawn(move || http().post(format!("{api}/flush")).send().map(|r| r.status().as_u16()));
    let start = Instant::now();
    loop {
        let code = server.post_otlp(None, &request(50, 1, 1, "svc"));
        if code == 503 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "ingest never reported the failing store");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http().get(format!("{}/ready", server.api)).send().expect("ready").status(), 503);
    // Acknowledged data is still readable from memory meanwhile.
    assert_eq!(server.trace(None, &trace_id(1)).map(|r| span_count(&r)), Some(2));

    // The store comes back on the same port (same moto state is not needed: the bucket is recreated).
    let s3 = S3Server::start_on(port);
    s3.create_bucket("late");
    assert_eq!(flusher.join().expect("flusher").expect("flush request"), 204);
    assert_eq!(http().get(format!("{}/ready", server.api)).send().expect("ready").status(), 200);
    assert_eq!(server.post_otlp(None, &request(60, 1, 1, "svc")), 200);
    assert!(s3.keys("late").iter().any(|k| k.ends_with("data.parquet")));
    assert_eq!(server.trace(None, &trace_id(1)).map(|r| span_count(&r)), Some(2));
}
