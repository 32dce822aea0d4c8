//! temp
pub mod block;
pub mod config;
pub mod ingest;
pub mod model;
pub mod query;
pub mod receiver;
pub mod storage;
pub mod telemetry;
