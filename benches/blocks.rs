//! Block index at scale: many blocks on S3 (moto), then start-up time, idle memory and trace-by-ID latency.
//!
//! `cargo bench --bench blocks -- --blocks 1000 --spans-per-block 10000` ingests generated traces (the ingest
//! benchmark's generator, in chunks) into a server that cuts a block every `--spans-per-block` spans and does not
//! compact, restarts it, and reports: start-up time until `/ready`, idle RSS, and trace-by-ID p50/p99 with object
//! GETs per lookup, cold (first lookup of each trace after the restart) and warm (the same lookups again).

#[path = "common/gen.rs"]
mod generator;
#[path = "common/proc.rs"]
mod proc;

use std::time::{Duration, Instant};

use clap::Parser;
use proc::{free_port, metric, percentile, start, status_kb};
use prost::Message;

#[derive(Parser, Debug)]
struct Args {
    /// Blocks to create.
    #[arg(long, default_value_t = 1000)]
    blocks: usize,
    /// Spans per block.
    #[arg(long, default_value_t = 10_000)]
    spans_per_block: usize,
    /// Trace-by-ID lookups to time (each cold, then warm).
    #[arg(long, default_value_t = 300)]
    lookups: usize,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let (_moto, mut env) = proc::start_moto();
    env.extend([
        ("STRATA_COMPACTION".to_string(), "false".to_string()),
        ("STRATA_MAX_BLOCK_SPANS".to_string(), args.spans_per_block.to_string()),
    ]);
    let ports = (free_port(), free_port(), free_port());
    let total_spans = args.blocks * args.spans_per_block;
    // The generator makes ~8 spans per trace; chunks keep memory small.
    let traces = total_spans / 8;
    let chunk = 50_000usize;
    let mut sample: Vec<[u8; 16]> = Vec::new();
    {
        let server = start(&data, ports, &env);
        let url = format!("http://127.0.0.1:{}/v1/traces", ports.1);
        let t = Instant::now();
        let mut sent = 0usize;
        let mut seed = 1u64;
        while sent < traces {
            let n = chunk.min(traces - sent);
            let (reqs, ids) = generator::requests(seed, n, 100);
            sample.extend(ids.iter().step_by((n / 40).max(1)).copied());
            let failed = proc::post_all(&url, reqs.into_iter().map(|r| bytes::Bytes::from(r.encode_to_vec())), 8);
            assert_eq!(failed, 0, "ingest requests failed");
            sent += n;
            seed += 1;
        }
        let r = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(1800))
            .build()
            .expect("client")
            .post(format!("{}/flush", server.api))
            .send()
            .expect("flush");
        assert!(r.status().is_success());
        eprintln!("ingested {traces} traces in {:.0} s", t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let server = start(&data, ports, &env);
    let client = reqwest::blocking::Client::new();
    while client.get(format!("{}/ready", server.api)).send().map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let startup = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let pid = server.child.id();
    let idle_rss = status_kb(pid, "VmRSS") / 1024;
    let blocks = metric(&server.api, "strata_blocks");
    let ids: Vec<[u8; 16]> =
        sample.iter().step_by((sample.len() / args.lookups.max(1)).max(1)).take(args.lookups).copied().collect();
    let gets = || metric(&server.api, "strata_object_store_gets_total");
    let run = |label: &str| {
        let g0 = gets();
        let mut ms: Vec<f64> = ids.iter().map(|id| proc::time_lookup(&client, &server.api, id)).collect();
        let per = (gets() - g0) / ids.len() as f64;
        ms.sort_by(f64::total_cmp);
        println!(
            "| trace by ID, {label}, {} lookups | p50 {:.2} ms, p99 {:.2} ms | {per:.2} |",
            ids.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99)
        );
    };
    println!(
        "{blocks} blocks, {total_spans} spans (S3: moto); start-up {startup:.2} s to /ready, idle RSS {idle_rss} MB\n"
    );
    println!("| measure | value | object GETs per lookup |");
    println!("|---|---|---|");
    run("cold (first after restart)");
    run("warm");
    println!("| server RSS after lookups | {} MB | |", status_kb(pid, "VmHWM") / 1024);
}
