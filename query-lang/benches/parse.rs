//! Parse-time benchmark without external harness: `cargo bench -p query-lang --bench parse`.
//!
//! Measures a typical Grafana search query, a metrics query and a ~4 KB query, reporting the
//! median and mean time per parse over many iterations.

use std::hint::black_box;
use std::time::{Duration, Instant};

fn bench(name: &str, query: &str) {
    // Warm up and make sure the query is valid before timing it.
    if let Err(e) = query_lang::parse(query) {
        eprintln!("{name}: does not parse: {e}");
        std::process::exit(1);
    }
    let mut samples = Vec::new();
    let budget = Duration::from_millis(700);
    let started = Instant::now();
    while started.elapsed() < budget {
        let batch = 50;
        let t = Instant::now();
        for _ in 0..batch {
            let _ = black_box(query_lang::parse(black_box(query)));
        }
        samples.push(t.elapsed() / batch);
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "{name:<28} {:>6} bytes  median {:>9.2?}  mean {:>9.2?}  ({} batches of 50)",
        query.len(),
        median,
        mean,
        samples.len()
    );
}

fn main() {
    let grafana = r#"{ resource.service.name = "checkout" && span.http.status_code >= 500 && duration > 250ms && name =~ "GET /api/.*" } | select(span.http.url)"#;
    let metrics = r#"{ resource.service.name = "checkout" && status = error } | quantile_over_time(duration, 0.5, 0.99) by (span.http.route) | topk(10)"#;
    let mut big = String::from("{ ");
    let mut i = 0;
    while big.len() < 4000 {
        if i > 0 {
            big.push_str(if i % 3 == 0 { " || " } else { " && " });
        }
        big.push_str(&format!(
            r#"(span.attr_{i} = "value-{i}" && resource.k8s.pod.uid != "pod-{i}" && duration > {i}ms)"#
        ));
        i += 1;
    }
    big.push_str(" } | by(resource.service.name) | count() > 3");
    bench("typical Grafana search", grafana);
    bench("metrics query", metrics);
    bench("4 KB query", &big);
}
