#!/usr/bin/env python3
"""Emit one known trace through a real OpenTelemetry Python exporter.

    python3 tests/clients/emit.py <protocol> <endpoint>

protocol   exporter (PyPI package)                         endpoint example
zipkin-json    opentelemetry-exporter-zipkin-json         http://127.0.0.1:9411/api/v2/spans
zipkin-proto   opentelemetry-exporter-zipkin-proto-http   http://127.0.0.1:9411/api/v2/spans
jaeger-thrift  opentelemetry-exporter-jaeger-thrift       http://127.0.0.1:14268/api/traces
jaeger-grpc    opentelemetry-exporter-jaeger-proto-grpc   127.0.0.1:14250

For the HTTP protocols an endpoint without a path ("http://127.0.0.1:9411") gets the
default path of that protocol; for jaeger-grpc a leading "http://" is dropped (the channel
is always plaintext).

The trace has the same shape for every protocol:
  GET /cart    SERVER   root; http.method="GET", http.status_code=200, ratio=0.25,
                        cached=True, tags_list=["a","b"]; status UNSET
  SELECT cart  CLIENT   child of the root; event "retry" {attempt: 2}; a link to the
                        root span {link.kind: "self"}; status ERROR "db timeout"
  serialize    INTERNAL child of SELECT cart; status OK
Resource: service.name=e2e-<protocol>, deployment.environment=test, host.name=h1 (plus
the SDK's telemetry.sdk.* attributes). Instrumentation scope: e2e-scope 0.1.0.

All three spans go out in ONE export call (a BatchSpanProcessor that only exports on
force_flush). On success one line of JSON goes to stdout:
  {"trace_id": "<32 hex>", "spans": {"GET /cart": "<16 hex>", ...}, "service": "e2e-<protocol>"}
Exit status: 0 exported and accepted; 1 the export failed or the receiver rejected it
(these exporters often only log that, so logged errors count as failures too); 2 usage
error or a missing package (install with tests/clients/install.sh).
"""

import json
import logging
import os
import sys
import warnings
from urllib.parse import urlsplit, urlunsplit

PROTOCOLS = {
    # protocol: (module, PyPI package, default URL path or None for gRPC)
    "zipkin-json": ("opentelemetry.exporter.zipkin.json", "opentelemetry-exporter-zipkin-json", "/api/v2/spans"),
    "zipkin-proto": (
        "opentelemetry.exporter.zipkin.proto.http",
        "opentelemetry-exporter-zipkin-proto-http",
        "/api/v2/spans",
    ),
    "jaeger-thrift": ("opentelemetry.exporter.jaeger.thrift", "opentelemetry-exporter-jaeger-thrift", "/api/traces"),
    "jaeger-grpc": ("opentelemetry.exporter.jaeger.proto.grpc", "opentelemetry-exporter-jaeger-proto-grpc", None),
}

EXPORT_TIMEOUT_S = 10


def fail(code, msg):
    print(f"emit.py: {msg}", file=sys.stderr)
    sys.exit(code)


class ProblemLog(logging.Handler):
    """Keeps every WARNING-or-worse record from the OpenTelemetry loggers (exporters, SDK
    processors) and from thrift/grpc/urllib3, and ERROR-or-worse from anywhere: the
    exporters report a rejected batch only through logging."""

    WATCHED = ("opentelemetry", "thrift", "grpc", "urllib3", "requests")

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.problems = []

    def emit(self, record):
        watched = record.name.split(".")[0] in self.WATCHED
        if watched or record.levelno >= logging.ERROR:
            msg = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                msg += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            self.problems.append(f"{record.name}: {msg}")


def normalize_endpoint(protocol, endpoint):
    default_path = PROTOCOLS[protocol][2]
    if default_path is None:
        for prefix in ("http://", "grpc://", "dns:///"):
            if endpoint.startswith(prefix):
                endpoint = endpoint[len(prefix):]
        return endpoint.rstrip("/")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    parts = urlsplit(endpoint)
    if parts.path in ("", "/"):
        parts = parts._replace(path=default_path)
    return urlunsplit(parts)


def import_sdk(protocol):
    module, package, _ = PROTOCOLS[protocol]
    try:
        import importlib

        importlib.import_module("opentelemetry.sdk.trace")
        exporter_module = importlib.import_module(module)
    except ImportError as e:
        fail(
            2,
            f"cannot import the {protocol} client ({package} and its dependencies): {e}; "
            "install the pinned set with tests/clients/install.sh and put its directory on PYTHONPATH",
        )
    return exporter_module


def make_exporter(protocol, endpoint, mod):
    if protocol in ("zipkin-json", "zipkin-proto"):
        return mod.ZipkinExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S)
    if protocol == "jaeger-thrift":
        return mod.JaegerExporter(collector_endpoint=endpoint, timeout=EXPORT_TIMEOUT_S)
    if protocol == "jaeger-grpc":
        return mod.JaegerExporter(collector_endpoint=endpoint, insecure=True, timeout=EXPORT_TIMEOUT_S)
    raise AssertionError(protocol)


def main(argv):
    if len(argv) != 3 or argv[1] not in PROTOCOLS:
        fail(2, f"usage: {argv[0]} <{'|'.join(PROTOCOLS)}> <endpoint>")
    protocol, endpoint = argv[1], normalize_endpoint(argv[1], argv[2])

    # The receiver is always local: never let a proxy from the environment in between.
    for var in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy"):
        os.environ.pop(var, None)
        os.environ.pop(var.upper(), None)
    # The Jaeger exporters are deprecated upstream and say so on construction; that is noise here.
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    problems = ProblemLog()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="emit.py log: %(name)s %(levelname)s %(message)s")
    logging.getLogger().addHandler(problems)

    exporter_module = import_sdk(protocol)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context

    class CheckedExporter(SpanExporter):
        """Wraps the real exporter and keeps the outcome of every export call."""

        def __init__(self, inner):
            self.inner = inner
            self.calls = []  # (span count, result or exception text)

        def export(self, spans):
            try:
                result = self.inner.export(spans)
            except Exception as e:  # the SDK would only log this
                self.calls.append((len(spans), f"raised {type(e).__name__}: {e}"))
                return SpanExportResult.FAILURE
            outcome = result
            # The thrift exporter returns SUCCESS whatever the collector answered; read the
            # HTTP status it got straight from its transport.
            collector = getattr(self.inner, "_collector", None)
            code = getattr(getattr(collector, "http_transport", None), "code", None)
            if code is not None and not 200 <= code < 300:
                outcome = f"HTTP {code} {getattr(collector.http_transport, 'message', '')}".strip()
                result = SpanExportResult.FAILURE
            self.calls.append((len(spans), outcome))
            return result

        def shutdown(self):
            return self.inner.shutdown()

        def force_flush(self, timeout_millis=30000):
            return self.inner.force_flush(timeout_millis)

    service = f"e2e-{protocol}"
    resource = Resource.create({"service.name": service, "deployment.environment": "test", "host.name": "h1"})
    provider = TracerProvider(resource=resource)
    try:
        exporter = CheckedExporter(make_exporter(protocol, endpoint, exporter_module))
    except Exception as e:
        fail(1, f"could not construct the {protocol} exporter for {endpoint}: {type(e).__name__}: {e}")
    # Only force_flush exports, so the three spans travel in one request.
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=600_000, max_export_batch_size=512, export_timeout_millis=30_000)
    )
    tracer = provider.get_tracer("e2e-scope", "0.1.0")

    root = tracer.start_span(
        "GET /cart",
        kind=SpanKind.SERVER,
        attributes={
            "http.method": "GET",
            "http.status_code": 200,
            "ratio": 0.25,
            "cached": True,
            "tags_list": ["a", "b"],
        },
    )
    root_ctx = root.get_span_context()
    child = tracer.start_span(
        "SELECT cart",
        context=set_span_in_context(root),
        kind=SpanKind.CLIENT,
        links=[Link(root_ctx, {"link.kind": "self"})],
    )
    child.add_event("retry", {"attempt": 2})
    grandchild = tracer.start_span("serialize", context=set_span_in_context(child), kind=SpanKind.INTERNAL)
    grandchild.set_status(Status(StatusCode.OK))
    grandchild.end()
    child.set_status(Status(StatusCode.ERROR, "db timeout"))
    child_ctx = child.get_span_context()
    child.end()
    root.end()
    grandchild_ctx = grandchild.get_span_context()

    flushed = provider.force_flush(timeout_millis=30_000)
    provider.shutdown()

    errors = []
    if not flushed:
        errors.append("force_flush timed out")
    if not exporter.calls:
        errors.append("the exporter was never called")
    exported = 0
    for count, outcome in exporter.calls:
        if outcome is SpanExportResult.SUCCESS:
            exported += count
        else:
            errors.append(f"export of {count} span(s) failed: {outcome}")
    if exported != 3 and not errors:
        errors.append(f"{exported} span(s) exported, expected 3")
    errors.extend(f"logged: {p}" for p in problems.problems)
    if errors:
        fail(1, f"{protocol} export to {endpoint} failed:\n  " + "\n  ".join(errors))

    print(
        json.dumps(
            {
                "trace_id": format(root_ctx.trace_id, "032x"),
                "spans": {
                    "GET /cart": format(root_ctx.span_id, "016x"),
                    "SELECT cart": format(child_ctx.span_id, "016x"),
                    "serialize": format(grandchild_ctx.span_id, "016x"),
                },
                "service": service,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
