//! The `strata` binary: configuration, logging, signals. Everything else lives in the library.

use anyhow::Context;
use clap::Parser;
use strata::config::{Args, Config};
use tracing_subscriber::EnvFilter;

// Spans arrive as many small allocations that live until their block is built and then die together; mimalloc
// handles that pattern with far less CPU and fragmentation than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h; the enum keeps deprecated
/// entries so that positions stay stable). The Rust bindings name no constant for it.
const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;

/// Freed pages go back to the OS after 1 s. Session 7 had cut this to 10 ms: a 100k-trace search answer then
/// held ~300 MB, and the search benchmark's query sequence peaked at 593 MB (383 MB with 10 ms). Answers now hold
/// less (hits share their strings), and with 10 ms every large answer ran on fresh pages: page faults were a
/// fifth of its CPU. Measured in session 10 (BENCHMARKS.md): all 100k traces 365 -> 294 ms, the search sequence's
/// peak RSS 402 -> 427 MB, ingest's 360 -> 466 MB (250 ms: 328 ms, 421 and 415 MB). `MIMALLOC_PURGE_DELAY` still
/// overrides it.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one process-wide integer option; called before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    }
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cfg = Config::load(Args::parse()).context("loading configuration")?;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cfg.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move { strata::server::run(cfg, shutdown_signal()).await })?;
    Ok(())
}

/// SIGTERM (orchestrators) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
