//! CPU cost of span metrics and the service graph per ingested span, measured in-process (the end-to-end ingest
//! benchmark's run-to-run noise, about 1 us per span, is larger than what this adds).
//!
//! `cargo bench --bench generator -- --traces 100000` converts the ingest benchmark's requests (same seed) to
//! span records as ingest does, then times `Generator::prepare` + `record` over all of them, per request as ingest
//! calls them, and reports nanoseconds per span and the series created.

#[path = "common/gen.rs"]
mod generator;

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use strata::generate::{Generator, GeneratorConfig};
use strata::model::Tenant;
use strata::telemetry::Metrics;

// The server's allocator, so allocation costs are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    /// Traces (about 8 spans each).
    #[arg(long, default_value_t = 100_000)]
    traces: usize,
    /// Passes over the data (the first one creates the series).
    #[arg(long, default_value_t = 3)]
    passes: usize,
    /// Accepted for `cargo bench` compatibility.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    let (reqs, _) = generator::requests(42, args.traces, 100);
    let batches: Vec<_> = reqs.into_iter().map(strata::ingest::to_records).collect();
    let spans: usize = batches.iter().map(Vec::len).sum();
    let g = Generator::new(GeneratorConfig::default(), Arc::new(Metrics::new()));
    let tenant = Tenant::default();
    println!("| pass | ns per span | spans |");
    println!("|---|---|---|");
    for pass in 0..args.passes {
        let t = Instant::now();
        for b in &batches {
            let observed = g.prepare(&tenant, b);
            g.record(&tenant, observed);
        }
        let ns = t.elapsed().as_nanos() as f64 / spans as f64;
        println!("| {} | {ns:.0} | {spans} |", pass + 1);
    }
    let mut text = String::new();
    g.encode(&mut text);
    let series = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    println!(
        "\nseries: {} span-metrics call series, {} service-graph edges",
        series("traces_spanmetrics_calls_total{"),
        series("traces_service_graph_request_total{")
    );
}
