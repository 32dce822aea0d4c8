//! Helpers the benchmarks share: start the real `strata` binary, read its CPU and memory from /proc, and its
//! counters from `/metrics`.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    pub api: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

pub fn start(data: &Path, ports: (u16, u16, u16), env: &[(String, String)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.env("STRATA_DATA_DIR", data)
        .env("STRATA_HTTP_ADDR", format!("127.0.0.1:{}", ports.0))
        .env("STRATA_OTLP_HTTP_ADDR", format!("127.0.0.1:{}", ports.1))
        .env("STRATA_OTLP_GRPC_ADDR", format!("127.0.0.1:{}", ports.2))
        // The benchmarks speak OTLP only: other receivers stay off so a second server (or a benchmark beside a
        // running Strata) does not collide on their fixed default ports.
        .env("STRATA_ZIPKIN_ADDR", "off")
        .env("STRATA_JAEGER_GRPC_ADDR", "off")
        .env("STRATA_JAEGER_THRIFT_HTTP_ADDR", "off")
        .env("STRATA_MAX_BLOCK_AGE", "1h")
        .env("STRATA_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start strata");
    let api = format!("http://127.0.0.1:{}", ports.0);
    let t = Instant::now();
    while reqwest::blocking::get(format!("{api}/api/echo")).is_err() {
        assert!(t.elapsed() < Duration::from_secs(60), "strata did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc { child, api }
}

pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<f64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // Fields after the command: state(skipped: not numeric) ppid pgrp ... utime is field 14 overall.
    let utime = f.get(10).copied().unwrap_or(0.0);
    let stime = f.get(11).copied().unwrap_or(0.0);
    (utime + stime) / clk_tck()
}

pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let m = e.metadata().ok();
                    if m.as_ref().is_some_and(|m| m.is_dir()) { dir_size(&e.path()) } else { m.map_or(0, |m| m.len()) }
                })
                .sum()
        })
        .unwrap_or(0)
}

pub fn metric(api: &str, name: &str) -> f64 {
    reqwest::blocking::get(format!("{api}/metrics"))
        .and_then(|r| r.text())
        .unwrap_or_default()
        .lines()
        // The exact series: `strata_blocks` must not match `strata_blocks_flushed_total`.
        .find(|l| l.split_whitespace().next().is_some_and(|n| n == name || n.starts_with(&format!("{name}{{"))))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Starts a moto S3 server with a `bench` bucket; returns it and the environment that points strata at it.
pub fn start_moto() -> (Proc, Vec<(String, String)>) {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server on PATH (pip install 'moto[server]')");
    let ep = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    while reqwest::blocking::Client::new().put(format!("{ep}/bench")).send().is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let env = [
        ("STRATA_STORAGE", "s3"),
        ("STRATA_S3_ENDPOINT", ep.as_str()),
        ("STRATA_S3_BUCKET", "bench"),
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    (Proc { child, api: ep }, env)
}

/// POSTs OTLP/HTTP protobuf bodies to `url`, `concurrency` at a time; returns how many were not accepted.
pub fn post_all(url: &str, bodies: impl Iterator<Item = bytes::Bytes>, concurrency: usize) -> usize {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::new();
        futures::stream::iter(bodies)
            .map(|b| {
                let (c, url) = (client.clone(), url.to_string());
                async move {
                    let r = c.post(url).header("Content-Type", "application/x-protobuf").body(b).send().await;
                    usize::from(!r.is_ok_and(|r| r.status().is_success()))
                }
            })
            .buffer_unordered(concurrency)
            .fold(0, |a, b| async move { a + b })
            .await
    })
}

/// Times one trace-by-ID lookup over v2 protobuf, as Grafana asks; panics unless it is found.
pub fn time_lookup(client: &reqwest::blocking::Client, api: &str, id: &[u8; 16]) -> f64 {
    let t = Instant::now();
    let r = client
        .get(format!("{api}/api/v2/traces/{}", hex::encode(id)))
        .header("Accept", "application/protobuf")
        .send()
        .expect("lookup");
    assert_eq!(r.status(), 200, "trace {} not found", hex::encode(id));
    let _ = r.bytes();
    t.elapsed().as_secs_f64() * 1000.0
}
