//! Generates the Tempo messages and the `tempopb.StreamingQuerier` service, Zipkin's and Jaeger's span messages
//! and Jaeger's `CollectorService` from `proto/` (pure Rust: protox
//! parses the .proto files, so no `protoc` is needed). OTLP types map to the `opentelemetry-proto` crate.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["tempo.proto", "zipkin.proto", "jaeger.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".opentelemetry.proto.common.v1", "::opentelemetry_proto::tonic::common::v1")
        .extern_path(".opentelemetry.proto.resource.v1", "::opentelemetry_proto::tonic::resource::v1")
        .extern_path(".opentelemetry.proto.trace.v1", "::opentelemetry_proto::tonic::trace::v1")
        .compile_fds(fds)?;
    Ok(())
}
