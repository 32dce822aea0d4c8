//! The `strata` binary: configuration, logging, signals. Everything else lives in the library.

use anyhow::Context;
use clap::Parser;
use strata::config::{Args, Config};
use tracing_subscriber::EnvFilter;

// Spans arrive as many small allocations that live until their block is built and then die together; mimalloc
// handles that pattern with far less CPU and fragmentation than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
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
