//! Tempo's messages and the `StreamingQuerier` gRPC service, generated from `proto/tempo.proto` by build.rs
//! (field numbers identical to Tempo's, so Grafana decodes them).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/tempopb.rs"));
