//! Block-format choices, measured: builds blocks from the same generated spans with different options and
//! reports bytes per span (against raw OTLP protobuf) and build time. The defaults in `BlockOptions` come from
//! this table; see src/block/DESIGN.md.
//!
//! `cargo bench --bench block_format -- --traces 20000`

#[path = "common/gen.rs"]
mod generator;

use std::collections::BTreeMap;
use std::time::Instant;

use clap::Parser;
use prost::Message;
use strata::block::{BlockOptions, build_block};
use strata::model::{SpanRecord, TraceId};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 20_000)]
    traces: usize,
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    let (reqs, _) = generator::requests(7, args.traces, 100);
    let raw: usize = reqs.iter().map(|r| r.encoded_len()).sum();
    let mut traces: BTreeMap<TraceId, Vec<SpanRecord>> = BTreeMap::new();
    for r in reqs {
        for (id, rec) in strata::ingest::to_records(r) {
            traces.entry(id).or_default().push(rec);
        }
    }
    let traces: Vec<(TraceId, Vec<SpanRecord>)> = traces.into_iter().collect();
    let spans: usize = traces.iter().map(|t| t.1.len()).sum();
    println!(
        "{} traces, {spans} spans, raw OTLP protobuf {raw} B ({:.0} B/span)\n",
        traces.len(),
        raw as f64 / spans as f64
    );
    println!("| variant | bytes/span | x raw OTLP | build ms | row groups |");
    println!("|---|---|---|---|---|");
    let base = BlockOptions::default();
    let variants: Vec<(&str, BlockOptions)> = vec![
        ("default (zstd 3, 16k rows/group, 4k rows/page, dedicated on)", base.clone()),
        ("all zstd (no LZ4 search columns)", BlockOptions { lz4_search_columns: false, ..base.clone() }),
        ("zstd 1", BlockOptions { zstd_level: 1, ..base.clone() }),
        ("zstd 6", BlockOptions { zstd_level: 6, ..base.clone() }),
        ("zstd 9", BlockOptions { zstd_level: 9, ..base.clone() }),
        ("4k rows/group", BlockOptions { row_group_rows: 4096, ..base.clone() }),
        ("64k rows/group", BlockOptions { row_group_rows: 65536, ..base.clone() }),
        ("1k rows/page", BlockOptions { page_rows: 1024, ..base.clone() }),
        ("20k rows/page (Parquet default)", BlockOptions { page_rows: 20_000, ..base.clone() }),
        ("no dedicated columns", BlockOptions { dedicated_min_share: 2.0, ..base.clone() }),
    ];
    for (name, opts) in variants {
        let t = Instant::now();
        let b = build_block("bench", "b", &traces, raw as u64, &opts).expect("build");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let bytes = b.data.len() + b.bloom.len();
        println!(
            "| {name} | {:.1} | {:.3} | {ms:.0} | {} |",
            bytes as f64 / spans as f64,
            bytes as f64 / raw as f64,
            b.meta.row_groups
        );
    }
}
