//! Strata: a trace store. OTLP in, Parquet blocks on object storage, Tempo's query API out.
//!
//! Data flows one way through the modules: `receiver` -> `ingest` -> `block` / `storage` -> `query` -> `api`.
//! `generate` is fed by `ingest` (acknowledged spans become span metrics and service-graph series) and read by `api`.
//! `compact` sits beside `query` on `block` / `storage` (merging blocks, retention, garbage collection).
//! `model`, `config` and `telemetry` are shared foundations every layer may use; `server` wires the layers together.

pub mod api;
pub mod block;
pub mod compact;
pub mod config;
pub mod generate;
pub mod ingest;
pub mod model;
pub mod query;
pub mod receiver;
pub mod server;
pub mod storage;
pub mod telemetry;
