//! Ingest and lookup benchmark against the real `strata` binary (built with the bench/release profile).
//!
//! `cargo bench --bench ingest -- --traces 100000` generates realistic microservice traces, pre-builds the OTLP
//! requests, sends them from one core, flushes, and reports: spans/s, server CPU per span (ingest, and including
//! block build and upload), peak server RSS, stored bytes per span against the raw OTLP protobuf size, and
//! trace-by-ID latency after a restart (cold caches) and warm. `--s3` runs the storage part against a moto S3
//! server and reports object reads per lookup once blooms and footers are cached.

#[path = "common/gen.rs"]
mod generator;
#[path = "common/proc.rs"]
mod proc;

use proc::{cpu_seconds, dir_size, free_port, metric, percentile, start, status_kb};

use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

#[derive(Parser, Debug)]
struct Args {
    /// Traces to send (about 7.5 spans each).
    #[arg(long, default_value_t = 100_000)]
    traces: usize,
    /// Traces per export request.
    #[arg(long, default_value_t = 100)]
    per_request: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// `http` (OTLP/HTTP protobuf) or `grpc`.
    #[arg(long, default_value = "http")]
    protocol: String,
    /// Trace-by-ID lookups to time.
    #[arg(long, default_value_t = 300)]
    lookups: usize,
    /// Store blocks in a moto S3 server (moto_server must be on PATH) instead of local disk.
    #[arg(long)]
    s3: bool,
    /// Turn span metrics and the service graph off (to measure what they cost).
    #[arg(long)]
    no_generator: bool,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

fn lookups(api: &str, ids: &[[u8; 16]], n: usize) -> Vec<f64> {
    let client = reqwest::blocking::Client::new();
    let step = (ids.len() / n.max(1)).max(1);
    let mut ms: Vec<f64> = ids.iter().step_by(step).take(n).map(|id| proc::time_lookup(&client, api, id)).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    ms
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let (_moto, mut env) = if args.s3 {
        let (moto, env) = proc::start_moto();
        (Some(moto), env)
    } else {
        (None, Vec::new())
    };
    // Ingest alone: compaction (measured by `benches/search.rs --compacted`) would share the CPU and memory.
    env.push(("STRATA_COMPACTION".into(), "false".into()));
    if args.no_generator {
        env.push(("STRATA_GENERATOR".into(), "false".into()));
    }

    eprintln!("generating {} traces...", args.traces);
    let (reqs, ids) = generator::requests(42, args.traces, args.per_request);
    let spans: usize =
        reqs.iter().flat_map(|r| &r.resource_spans).flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    let bodies: Vec<bytes::Bytes> = reqs.iter().map(|r| bytes::Bytes::from(r.encode_to_vec())).collect();
    let raw: u64 = bodies.iter().map(|b| b.len() as u64).sum();
    eprintln!("{spans} spans in {} requests, {raw} bytes of OTLP protobuf", reqs.len());

    let ports = (free_port(), free_port(), free_port());
    let server = start(&data, ports, &env);
    let pid = server.child.id();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    // One client core: a current-thread runtime keeps `concurrency` requests in flight.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let otlp_http = format!("http://127.0.0.1:{}/v1/traces", ports.1);
    let grpc = format!("http://127.0.0.1:{}", ports.2);
    let failures: usize = rt.block_on(async {
        if args.protocol == "grpc" {
            let client = TraceServiceClient::connect(grpc).await.expect("grpc connect");
            futures::stream::iter(reqs)
                .map(|r| {
                    let mut c = client.clone();
                    async move { c.export(r).await.is_err() as usize }
                })
                .buffer_unordered(args.concurrency)
                .fold(0, |a, b| async move { a + b })
                .await
        } else {
            let client = reqwest::Client::new();
            futures::stream::iter(bodies.iter().cloned())
                .map(|b| {
                    let c = client.clone();
                    let url = otlp_http.clone();
                    async move {
                        let r = c.post(url).header("Content-Type", "application/x-protobuf").body(b).send().await;
                        (!r.is_ok_and(|r| r.status().is_success())) as usize
                    }
                })
                .buffer_unordered(args.concurrency)
                .fold(0, |a, b| async move { a + b })
                .await
        }
    });
    let ingest_secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(pid);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/flush", server.api))
        .timeout(Duration::from_secs(600))
        .send()
        .expect("flush");
    assert!(r.status().is_success(), "flush failed");
    let total_secs = t0.elapsed().as_secs_f64();
    let cpu2 = cpu_seconds(pid);
    let hwm_mb = status_kb(pid, "VmHWM") as f64 / 1024.0;
    assert_eq!(failures, 0, "{failures} requests failed");

    // Local disk: everything under the block directory. S3: the block sizes recorded in the tenant's index.
    let stored = if let Some(moto) = &_moto {
        let metas: serde_json::Value = reqwest::blocking::get(format!("{}/bench/single-tenant/index.json", moto.api))
            .and_then(|r| r.json())
            .unwrap_or_default();
        metas["blocks"]
            .as_array()
            .map(|a| a.iter().map(|m| m["dataSize"].as_u64().unwrap_or(0) + m["bloomSize"].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0)
    } else {
        dir_size(&data.join("blocks"))
    };
    let blocks = metric(&server.api, "strata_blocks ");

    // Lookups after a restart: blooms load at start-up, footers on first use.
    drop(server);
    let server = start(&data, ports, &env);
    let cold = lookups(&server.api, &ids, args.lookups);
    let gets0 = metric(&server.api, "strata_object_store_gets_total");
    let warm = lookups(&server.api, &ids, args.lookups);
    let gets1 = metric(&server.api, "strata_object_store_gets_total");
    let reads_per_lookup = (gets1 - gets0) / warm.len().max(1) as f64;

    let us_ingest = (cpu1 - cpu0) * 1e6 / spans as f64;
    let us_total = (cpu2 - cpu0) * 1e6 / spans as f64;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| data set | {} traces, {spans} spans, {raw} B OTLP protobuf ({:.0} B/span), {} per request |",
        args.traces,
        raw as f64 / spans as f64,
        args.per_request
    );
    println!("| storage | {} |", if args.s3 { "S3 (moto, loopback)" } else { "local disk" });
    println!("| protocol / concurrency | {} / {} |", args.protocol, args.concurrency);
    println!("| ingest wall time | {ingest_secs:.2} s ({:.0} spans/s) |", spans as f64 / ingest_secs);
    println!("| ingest + flush wall time | {total_secs:.2} s |");
    println!("| server CPU per span, ingest path | {us_ingest:.2} us |");
    println!("| server CPU per span, incl. block build + upload | {us_total:.2} us |");
    println!("| server peak RSS | {hwm_mb:.0} MB |");
    println!("| blocks | {blocks} |");
    println!(
        "| stored bytes | {stored} B, {:.1} B/span, {:.3}x raw OTLP |",
        stored as f64 / spans as f64,
        stored as f64 / raw as f64
    );
    println!(
        "| trace by ID after restart (cold), {} lookups | p50 {:.2} ms, p99 {:.2} ms |",
        cold.len(),
        percentile(&cold, 0.5),
        percentile(&cold, 0.99)
    );
    println!(
        "| trace by ID warm, {} lookups | p50 {:.2} ms, p99 {:.2} ms |",
        warm.len(),
        percentile(&warm, 0.5),
        percentile(&warm, 0.99)
    );
    println!("| object reads per warm lookup | {reads_per_lookup:.2} |");
}
