#!/usr/bin/env python3
"""Server CPU per span for each ingest protocol, side by side.

    python3 benches/ingest_protocols.py --binary <strata> [--spans 200000] [--runs 3]

Generates one data set (seeded): traces of ~8 spans over 6 services, ~8 typed attributes per span, an event on
some spans, errors on a few. Each service's spans are cut into batches of --batch spans (512, the OpenTelemetry
SDK batch processor's default), one service per request as an SDK exporter sends them; the same batches, in the
same order, go out over every protocol. Every request body is encoded BEFORE anything is measured.

For each protocol and run the script starts the binary on a fresh data directory (blocks are not cut during the
load: --max-block-spans/--max-block-bytes/--max-block-age are set out of reach; compaction off), waits for /ready,
reads the server's utime+stime from /proc/<pid>/stat, sends every request from --concurrency threads (each with
its own keep-alive connection; one shared channel for gRPC), reads utime+stime again as soon as the last answer
is in, and divides by the spans sent:

  ingest CPU  receive, decode, convert to OTLP, WAL append + fsync, live head, metrics generator
  flush CPU   SIGTERM afterwards flushes the head into blocks; the child's rusage at exit minus the
              /proc reading just before the signal (block build is the same work for every protocol)

A run fails loudly when any request is not answered 200/202 (HTTP) or OK (gRPC), when the server's
strata_ingest_spans_accepted_total differs from the spans sent, when sample traces read back at
GET /api/v2/traces/<id> miss spans, or when the server does not exit 0.

Protocols (all on the receivers of one binary): otlp-http-proto, otlp-http-json, otlp-grpc, zipkin-json,
zipkin-proto, jaeger-thrift, jaeger-grpc. OTLP protobuf is encoded by hand (wire format, below); Zipkin protobuf,
Jaeger Thrift and Jaeger gRPC use the generated types shipped in the pinned OpenTelemetry exporter packages that
tests/clients/install.sh puts in $HOME/.cache/strata-py-clients (--clients overrides the directory). Zipkin and
Jaeger carry what their OpenTelemetry exporters carry: resource attributes as Zipkin tags / Jaeger process tags,
kind, status and scope as tags, events as annotations / logs.

Runs go round-robin over the protocols (run 1 of each, then run 2, ...) so that background load on the machine
spreads over all of them. Report: per protocol the median [min-max] of ingest CPU us/span, the median of
ingest+flush CPU us/span, median spans/s (wall, client included: noisy), requests and request-body bytes/span.
"""

import argparse
import base64
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")

SERVICES = ["frontend", "cart", "checkout", "payment", "inventory", "shipping"]
BACKENDS = SERVICES[1:]
SCOPE = ("io.opentelemetry.instrumentation.bench", "1.8.0")
ROUTES = ["/api/cart", "/api/checkout", "/api/products/{id}", "/api/orders", "/api/shipping/quote", "/healthz"]
RPC_METHODS = {
    "cart": ("CartService", ["GetCart", "AddItem", "EmptyCart"]),
    "checkout": ("CheckoutService", ["PlaceOrder", "PrepareOrder"]),
    "payment": ("PaymentService", ["Charge", "Refund"]),
    "inventory": ("InventoryService", ["Reserve", "CheckStock", "Release"]),
    "shipping": ("ShippingService", ["GetQuote", "ShipOrder"]),
}
TABLES = ["orders", "order_items", "carts", "products", "payments", "shipments"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/131.0", "okhttp/4.12.0", "curl/8.5.0", "python-requests/2.32.3"]
INTERNAL_OPS = ["validate cart", "render template", "compute totals", "apply promotions", "serialize response"]
ERRORS = [
    ("java.net.SocketTimeoutException", "connect timed out after 2000 ms"),
    ("psycopg2.OperationalError", "could not serialize access due to concurrent update"),
    ("ValueError", "quantity must be positive"),
]


class Span:
    __slots__ = ("trace_id", "span_id", "parent_id", "service", "name", "kind", "start_ns", "end_ns", "attrs",
                 "events", "status_code", "status_msg")

    def __init__(self, trace_id, span_id, parent_id, service, name, kind, start_ns, end_ns, attrs):
        self.trace_id, self.span_id, self.parent_id = trace_id, span_id, parent_id
        self.service, self.name, self.kind = service, name, kind
        self.start_ns, self.end_ns, self.attrs = start_ns, end_ns, attrs
        self.events = []  # (time_ns, name, [(key, value)])
        self.status_code, self.status_msg = 0, ""  # 0 unset, 1 ok, 2 error


def resource_attrs(service):
    i = SERVICES.index(service)
    return [
        ("service.name", service),
        ("service.version", f"2.{i}.7"),
        ("service.instance.id", f"{service}-6d9f8c7b5-{'abcdefghij'[i]}x{i}q"),
        ("host.name", f"ip-10-0-{i + 1}-{17 + i * 3}.ec2.internal"),
        ("deployment.environment", "production"),
    ]


def generate(n_spans, seed):
    """Traces of ~8 spans (5 to 11) until at least n_spans spans; returns (spans, traces as [(trace_id, [span_id])])."""
    rng = random.Random(seed)
    base_ns = (int(time.time()) - 600) * 1_000_000_000
    spans, traces = [], []
    t = 0
    while len(spans) < n_spans:
        trace_id = rng.getrandbits(128).to_bytes(16, "big")
        start = base_ns + t * 1_500_000 + rng.randrange(1_000_000)
        t += 1
        route = rng.choice(ROUTES)
        method = "GET" if route in ("/api/cart", "/api/products/{id}", "/healthz") else "POST"
        root = Span(trace_id, rng.getrandbits(64).to_bytes(8, "big"), b"", "frontend", f"{method} {route}", "SERVER",
                    start, start + rng.randrange(5_000_000, 250_000_000), [
                        ("http.request.method", method),
                        ("http.route", route),
                        ("url.path", route.replace("{id}", str(rng.randrange(1, 50000)))),
                        ("http.response.status_code", 200),
                        ("server.address", "shop.example.com"),
                        ("client.address", f"203.0.113.{rng.randrange(1, 255)}"),
                        ("user_agent.original", rng.choice(AGENTS)),
                        ("http.request.body.size", rng.randrange(0, 4096)),
                    ])
        tspans = [root]
        target = rng.randint(5, 11)
        while len(tspans) < target:
            parent = rng.choice([s for s in tspans if s.kind in ("SERVER", "INTERNAL")])
            width = max(parent.end_ns - parent.start_ns, 1000)
            s0 = parent.start_ns + rng.randrange(width // 2 + 1)
            s1 = s0 + rng.randrange(max(width // 3, 1000)) + 500
            svc = parent.service
            roll = rng.random()
            sid = lambda: rng.getrandbits(64).to_bytes(8, "big")  # noqa: E731
            if roll < 0.35 and len(tspans) + 2 <= target + 1:
                callee = rng.choice([b for b in BACKENDS if b != svc])
                rpc_service, methods = RPC_METHODS[callee]
                m = rng.choice(methods)
                name = f"oteldemo.{rpc_service}/{m}"
                peer = f"{callee}.shop.svc.cluster.local"
                client = Span(trace_id, sid(), parent.span_id, svc, name, "CLIENT", s0, s1, [
                    ("rpc.system", "grpc"),
                    ("rpc.service", f"oteldemo.{rpc_service}"),
                    ("rpc.method", m),
                    ("server.address", peer),
                    ("server.port", 8080),
                    ("network.peer.address", f"10.0.{SERVICES.index(callee) + 1}.{rng.randrange(2, 250)}"),
                    ("rpc.grpc.status_code", 0),
                    ("app.retry", False),
                ])
                server = Span(trace_id, sid(), client.span_id, callee, name, "SERVER",
                              s0 + 200_000, max(s1 - 200_000, s0 + 300_000), [
                                  ("rpc.system", "grpc"),
                                  ("rpc.service", f"oteldemo.{rpc_service}"),
                                  ("rpc.method", m),
                                  ("server.address", peer),
                                  ("server.port", 8080),
                                  ("client.address", f"10.0.{SERVICES.index(svc) + 1}.{rng.randrange(2, 250)}"),
                                  ("rpc.grpc.status_code", 0),
                                  ("app.request.items", rng.randrange(1, 12)),
                              ])
                tspans += [client, server]
            elif roll < 0.65:
                table = rng.choice(TABLES)
                op = rng.choice(["SELECT", "SELECT", "INSERT", "UPDATE"])
                stmt = {"SELECT": f"SELECT * FROM {table} WHERE id = $1 LIMIT 100",
                        "INSERT": f"INSERT INTO {table} (id, user_id, payload) VALUES ($1, $2, $3)",
                        "UPDATE": f"UPDATE {table} SET status = $1 WHERE id = $2"}[op]
                tspans.append(Span(trace_id, sid(), parent.span_id, svc, f"{op} {table}", "CLIENT", s0, s1, [
                    ("db.system", "postgresql"),
                    ("db.name", "shop"),
                    ("db.operation", op),
                    ("db.sql.table", table),
                    ("db.statement", stmt),
                    ("server.address", "postgres.shop.svc.cluster.local"),
                    ("server.port", 5432),
                    ("db.rows_returned", rng.randrange(0, 100)),
                ]))
            elif roll < 0.8:
                key = f"cart:{rng.randrange(1, 100000)}"
                tspans.append(Span(trace_id, sid(), parent.span_id, svc, "GET", "CLIENT", s0, s0 + rng.randrange(50_000, 2_000_000), [
                    ("db.system", "redis"),
                    ("db.operation", "GET"),
                    ("db.statement", f"GET {key}"),
                    ("db.redis.database_index", 0),
                    ("server.address", "redis.shop.svc.cluster.local"),
                    ("server.port", 6379),
                    ("network.transport", "tcp"),
                    ("app.cache.hit", rng.random() < 0.8),
                ]))
            else:
                op = rng.choice(INTERNAL_OPS)
                tspans.append(Span(trace_id, sid(), parent.span_id, svc, op, "INTERNAL", s0, s1, [
                    ("code.function", op.replace(" ", "_")),
                    ("code.namespace", f"shop.{svc}.handlers"),
                    ("code.lineno", rng.randrange(20, 900)),
                    ("thread.id", rng.randrange(1, 64)),
                    ("app.items", rng.randrange(1, 12)),
                    ("app.total", round(rng.uniform(1, 500), 2)),
                    ("app.currency", rng.choice(["USD", "EUR", "GBP"])),
                    ("app.user_id", f"u-{rng.randrange(1, 200000):06d}"),
                ]))
        for s in tspans:
            r = rng.random()
            if r < 0.03:  # error with an exception event
                etype, emsg = rng.choice(ERRORS)
                s.status_code, s.status_msg = 2, emsg
                s.events.append((s.end_ns - 1000, "exception", [
                    ("exception.type", etype),
                    ("exception.message", emsg),
                    ("exception.escaped", False),
                ]))
            elif r < 0.15:
                s.events.append((s.start_ns + 1000, "message", [
                    ("message.type", "SENT"),
                    ("message.id", 1),
                    ("message.uncompressed_size", rng.randrange(100, 5000)),
                ]))
        spans += tspans
        traces.append((trace_id, [s.span_id for s in tspans]))
    return spans, traces


def batches_of(spans, size):
    """One service per batch, each service's spans in order, cut every `size`; batches interleaved by the
    position of their first span (as several exporters send them side by side)."""
    per_service = {}
    for i, s in enumerate(spans):
        per_service.setdefault(s.service, []).append((i, s))
    out = []
    for svc, items in per_service.items():
        for k in range(0, len(items), size):
            chunk = items[k:k + size]
            out.append((chunk[0][0], svc, [s for _, s in chunk]))
    out.sort(key=lambda b: b[0])
    return [(svc, chunk) for _, svc, chunk in out]


# ---------------------------------------------------------------- OTLP protobuf, wire format by hand

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field, payload):
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _pstr(field, s):
    return _ld(field, s.encode())


def _puint(field, n):
    return _varint(field << 3) + _varint(n & 0xFFFFFFFFFFFFFFFF)


def _pfixed64(field, n):
    return _varint(field << 3 | 1) + struct.pack("<Q", n)


def _otlp_kv(key, v):
    if isinstance(v, bool):
        any_value = _puint(2, int(v))
    elif isinstance(v, int):
        any_value = _puint(3, v)
    elif isinstance(v, float):
        any_value = _varint(4 << 3 | 1) + struct.pack("<d", v)
    else:
        any_value = _pstr(1, v)
    return _pstr(1, key) + _ld(2, any_value)


OTLP_KIND = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}


def _otlp_span(s):
    b = [_ld(1, s.trace_id), _ld(2, s.span_id)]
    if s.parent_id:
        b.append(_ld(4, s.parent_id))
    b += [_pstr(5, s.name), _puint(6, OTLP_KIND[s.kind]), _pfixed64(7, s.start_ns), _pfixed64(8, s.end_ns)]
    b += [_ld(9, _otlp_kv(k, v)) for k, v in s.attrs]
    for t, name, attrs in s.events:
        b.append(_ld(11, _pfixed64(1, t) + _pstr(2, name) + b"".join(_ld(3, _otlp_kv(k, v)) for k, v in attrs)))
    status = (_pstr(2, s.status_msg) if s.status_msg else b"") + (_puint(3, s.status_code) if s.status_code else b"")
    if status:
        b.append(_ld(15, status))
    return b"".join(b)


def encode_otlp_proto(service, spans):
    resource = b"".join(_ld(1, _otlp_kv(k, v)) for k, v in resource_attrs(service))
    scope = _pstr(1, SCOPE[0]) + _pstr(2, SCOPE[1])
    scope_spans = _ld(1, scope) + b"".join(_ld(2, _otlp_span(s)) for s in spans)
    return _ld(1, _ld(1, resource) + _ld(2, scope_spans))


# ---------------------------------------------------------------- OTLP JSON

def _json_any(v):
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": v}


def _json_attrs(attrs):
    return [{"key": k, "value": _json_any(v)} for k, v in attrs]


def encode_otlp_json(service, spans):
    out = []
    for s in spans:
        d = {"traceId": s.trace_id.hex(), "spanId": s.span_id.hex(), "name": s.name, "kind": OTLP_KIND[s.kind],
             "startTimeUnixNano": str(s.start_ns), "endTimeUnixNano": str(s.end_ns), "attributes": _json_attrs(s.attrs)}
        if s.parent_id:
            d["parentSpanId"] = s.parent_id.hex()
        if s.events:
            d["events"] = [{"timeUnixNano": str(t), "name": n, "attributes": _json_attrs(a)} for t, n, a in s.events]
        if s.status_code:
            d["status"] = {"code": s.status_code, **({"message": s.status_msg} if s.status_msg else {})}
        out.append(d)
    req = {"resourceSpans": [{"resource": {"attributes": _json_attrs(resource_attrs(service))},
                              "scopeSpans": [{"scope": {"name": SCOPE[0], "version": SCOPE[1]}, "spans": out}]}]}
    return json.dumps(req, separators=(",", ":")).encode()


# ---------------------------------------------------------------- Zipkin v2 (as the OpenTelemetry Zipkin exporters)

def _ztag(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _zipkin_tags(service, s):
    tags = {k: _ztag(v) for k, v in s.attrs}
    tags.update((k, _ztag(v)) for k, v in resource_attrs(service))
    tags["otel.scope.name"], tags["otel.scope.version"] = SCOPE
    if s.status_code == 2:
        tags["otel.status_code"] = "ERROR"
        tags["error"] = s.status_msg
    elif s.status_code == 1:
        tags["otel.status_code"] = "OK"
    return tags


def _zipkin_annotation(name, attrs):
    return json.dumps({name: dict(attrs)}, separators=(",", ":"))


def encode_zipkin_json(service, spans):
    out = []
    for s in spans:
        d = {"traceId": s.trace_id.hex(), "id": s.span_id.hex(), "name": s.name,
             "timestamp": s.start_ns // 1000, "duration": max((s.end_ns - s.start_ns) // 1000, 1),
             "localEndpoint": {"serviceName": service}, "tags": _zipkin_tags(service, s)}
        if s.parent_id:
            d["parentId"] = s.parent_id.hex()
        if s.kind != "INTERNAL":
            d["kind"] = s.kind
        if s.events:
            d["annotations"] = [{"timestamp": t // 1000, "value": _zipkin_annotation(n, a)} for t, n, a in s.events]
        out.append(d)
    return json.dumps(out, separators=(",", ":")).encode()


def encode_zipkin_proto(service, spans):
    from opentelemetry.exporter.zipkin.proto.http.v2.gen import zipkin_pb2 as z
    out = z.ListOfSpans()
    for s in spans:
        p = out.spans.add()
        p.trace_id, p.id, p.name = s.trace_id, s.span_id, s.name
        if s.parent_id:
            p.parent_id = s.parent_id
        if s.kind != "INTERNAL":
            p.kind = z.Span.Kind.Value(s.kind)
        p.timestamp, p.duration = s.start_ns // 1000, max((s.end_ns - s.start_ns) // 1000, 1)
        p.local_endpoint.service_name = service
        for k, v in _zipkin_tags(service, s).items():
            p.tags[k] = v
        for t, n, a in s.events:
            p.annotations.add(timestamp=t // 1000, value=_zipkin_annotation(n, a))
    return out.SerializeToString()


# ---------------------------------------------------------------- Jaeger (as the OpenTelemetry Jaeger exporters)

def _signed64(b):
    return int.from_bytes(b, "big", signed=True)


def _jaeger_span_tags(s):
    """(key, value) pairs: attributes, then what the exporters add for kind, status and scope."""
    tags = list(s.attrs)
    if s.kind != "INTERNAL":
        tags.append(("span.kind", s.kind.lower()))
    if s.status_code == 2:
        tags += [("otel.status_code", "ERROR"), ("error", True), ("otel.status_description", s.status_msg)]
    elif s.status_code == 1:
        tags.append(("otel.status_code", "OK"))
    tags += [("otel.library.name", SCOPE[0]), ("otel.library.version", SCOPE[1])]
    return tags


def encode_jaeger_thrift(service, spans):
    from opentelemetry.exporter.jaeger.thrift.gen.jaeger import ttypes as j
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TTransport

    def tag(k, v):
        if isinstance(v, bool):
            return j.Tag(key=k, vType=j.TagType.BOOL, vBool=v)
        if isinstance(v, int):
            return j.Tag(key=k, vType=j.TagType.LONG, vLong=v)
        if isinstance(v, float):
            return j.Tag(key=k, vType=j.TagType.DOUBLE, vDouble=v)
        return j.Tag(key=k, vType=j.TagType.STRING, vStr=v)

    out = []
    for s in spans:
        out.append(j.Span(
            traceIdLow=_signed64(s.trace_id[8:]), traceIdHigh=_signed64(s.trace_id[:8]),
            spanId=_signed64(s.span_id), parentSpanId=_signed64(s.parent_id) if s.parent_id else 0,
            operationName=s.name, flags=1, startTime=s.start_ns // 1000,
            duration=max((s.end_ns - s.start_ns) // 1000, 1),
            tags=[tag(k, v) for k, v in _jaeger_span_tags(s)],
            logs=[j.Log(timestamp=t // 1000, fields=[tag("event", n)] + [tag(k, v) for k, v in a])
                  for t, n, a in s.events] or None))
    process = j.Process(serviceName=service,
                        tags=[tag(k, v) for k, v in resource_attrs(service) if k != "service.name"])
    buf = TTransport.TMemoryBuffer()
    j.Batch(process=process, spans=out).write(TBinaryProtocol.TBinaryProtocol(buf))
    return buf.getvalue()


def encode_jaeger_grpc(service, spans):
    from google.protobuf import duration_pb2, timestamp_pb2  # noqa: F401 (types used through the messages)
    from opentelemetry.exporter.jaeger.proto.grpc.gen import collector_pb2 as c
    from opentelemetry.exporter.jaeger.proto.grpc.gen import model_pb2 as m

    def fill(kv, k, v):
        kv.key = k
        if isinstance(v, bool):
            kv.v_type, kv.v_bool = m.ValueType.BOOL, v
        elif isinstance(v, int):
            kv.v_type, kv.v_int64 = m.ValueType.INT64, v
        elif isinstance(v, float):
            kv.v_type, kv.v_float64 = m.ValueType.FLOAT64, v
        else:
            kv.v_type, kv.v_str = m.ValueType.STRING, v

    req = c.PostSpansRequest()
    batch = req.batch
    batch.process.service_name = service
    for k, v in resource_attrs(service):
        if k != "service.name":
            fill(batch.process.tags.add(), k, v)
    for s in spans:
        p = batch.spans.add()
        p.trace_id, p.span_id, p.operation_name, p.flags = s.trace_id, s.span_id, s.name, 1
        if s.parent_id:
            p.references.add(trace_id=s.trace_id, span_id=s.parent_id, ref_type=m.SpanRefType.CHILD_OF)
        p.start_time.FromNanoseconds(s.start_ns - s.start_ns % 1000)
        p.duration.FromNanoseconds((s.end_ns - s.start_ns) // 1000 * 1000)
        for k, v in _jaeger_span_tags(s):
            fill(p.tags.add(), k, v)
        for t, n, a in s.events:
            log = p.logs.add()
            log.timestamp.FromNanoseconds(t - t % 1000)
            fill(log.fields.add(), "event", n)
            for k, v in a:
                fill(log.fields.add(), k, v)
    return req.SerializeToString()


# ---------------------------------------------------------------- protocols

# Below the ephemeral range (32768-60999 here), where other processes' outgoing connections and port-0 listeners
# (a test suite running beside this) would otherwise collide with these.
PORTS = {"api": 23200, "otlp_http": 24318, "otlp_grpc": 24317, "zipkin": 29411, "jaeger_grpc": 24250,
         "jaeger_thrift": 24268}

# name: (encoder, transport, port key, HTTP path or gRPC method, content type, metrics protocol label)
PROTOCOLS = {
    "otlp-http-proto": (encode_otlp_proto, "http", "otlp_http", "/v1/traces", "application/x-protobuf"),
    "otlp-http-json": (encode_otlp_json, "http", "otlp_http", "/v1/traces", "application/json"),
    "otlp-grpc": (encode_otlp_proto, "grpc", "otlp_grpc", "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                  None),
    "zipkin-json": (encode_zipkin_json, "http", "zipkin", "/api/v2/spans", "application/json"),
    "zipkin-proto": (encode_zipkin_proto, "http", "zipkin", "/api/v2/spans", "application/x-protobuf"),
    "jaeger-thrift": (encode_jaeger_thrift, "http", "jaeger_thrift", "/api/traces", "application/x-thrift"),
    "jaeger-grpc": (encode_jaeger_grpc, "grpc", "jaeger_grpc", "/jaeger.api_v2.CollectorService/PostSpans", None),
}


class RunError(Exception):
    pass


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def http_get(port, path, timeout=10):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


def send_http(port, path, ctype, bodies, concurrency):
    counter = itertools.count()
    errors = []

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while not errors:
                i = next(counter)
                if i >= len(bodies):
                    return
                conn.request("POST", path, body=bodies[i], headers={"Content-Type": ctype})
                r = conn.getresponse()
                data = r.read()
                if r.status not in (200, 202):
                    errors.append(f"request {i}: HTTP {r.status}: {data[:300]!r}")
        except Exception as e:  # noqa: BLE001 (any failure fails the run)
            errors.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    run_workers(worker, concurrency)
    return errors


def run_workers(worker, concurrency):
    """Runs `concurrency` threads of `worker` and waits for them all."""
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def send_grpc(port, method, bodies, concurrency):
    import grpc
    counter = itertools.count()
    errors = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        call = channel.unary_unary(method)  # no serializers: the pre-encoded bytes go out as they are

        def worker():
            try:
                while not errors:
                    i = next(counter)
                    if i >= len(bodies):
                        return
                    call(bodies[i], timeout=120)
            except grpc.RpcError as e:
                errors.append(f"gRPC {e.code()}: {e.details()}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"{type(e).__name__}: {e}")

        run_workers(worker, concurrency)
    return errors


def accepted_spans(metrics_text):
    total = 0
    for line in metrics_text.splitlines():
        if line.startswith("strata_ingest_spans_accepted_total"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def read_back(api_port, trace_id, span_ids):
    status, body = http_get(api_port, f"/api/v2/traces/{trace_id.hex()}")
    if status != 200:
        raise RunError(f"trace {trace_id.hex()}: HTTP {status}")
    doc = json.loads(body)
    got = set()
    for rs in doc["trace"]["resourceSpans"]:
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                got.add(base64.b64decode(sp["spanId"]))
    if got != set(span_ids):
        raise RunError(f"trace {trace_id.hex()}: read back {len(got)} spans, sent {len(span_ids)}")


def log_tail(path):
    with open(path, "rb") as f:
        return f.read()[-2000:].decode(errors="replace").strip()


def one_run(args, proto, bodies, n_spans, samples):
    """One measured run; a start-up that finds a port taken (another process, briefly) is retried."""
    for attempt in range(5):
        try:
            return _one_run(args, proto, bodies, n_spans, samples)
        except PortBusy as e:
            print(f"  start-up: {e}; retrying in 5 s", file=sys.stderr)
            time.sleep(5)
    raise RunError("ports still taken after 5 attempts")


class PortBusy(Exception):
    pass


def _one_run(args, proto, bodies, n_spans, samples):
    _, transport, port_key, path, ctype = PROTOCOLS[proto]
    work = tempfile.mkdtemp(prefix=f"strata-ingest-{proto}-", dir="/tmp")
    data_dir = os.path.join(work, "data")
    a = lambda k: f"127.0.0.1:{PORTS[k]}"  # noqa: E731
    cmd = [args.binary, "--data-dir", data_dir, "--http-addr", a("api"), "--otlp-http-addr", a("otlp_http"),
           "--otlp-grpc-addr", a("otlp_grpc"), "--zipkin-addr", a("zipkin"), "--jaeger-grpc-addr", a("jaeger_grpc"),
           "--jaeger-thrift-http-addr", a("jaeger_thrift"), "--compaction", "false",
           "--max-block-spans", "1000000000", "--max-block-bytes", str(1 << 40), "--max-block-age", "24h",
           "--generator", "false" if args.no_generator else "true", "--log", "warn"]
    log = open(os.path.join(work, "server.log"), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    ok = False
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                if "Address already in use" in log_tail(log.name):
                    raise PortBusy(log_tail(log.name).splitlines()[0])
                raise RunError(f"server exited with {proc.returncode} at start-up: {log_tail(log.name)}")
            try:
                if http_get(PORTS["api"], "/ready", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RunError("server not ready after 60 s")
            time.sleep(0.2)
        time.sleep(1.0)  # let start-up work settle
        cpu0 = proc_cpu_s(proc.pid)
        t0 = time.perf_counter()
        if transport == "http":
            errors = send_http(PORTS[port_key], path, ctype, bodies, args.concurrency)
        else:
            errors = send_grpc(PORTS[port_key], path, bodies, args.concurrency)
        wall = time.perf_counter() - t0
        cpu1 = proc_cpu_s(proc.pid)
        if errors:
            raise RunError(f"{len(errors)} failed request(s), first: {errors[0]}")
        accepted = accepted_spans(http_get(PORTS["api"], "/metrics")[1].decode())
        if accepted != n_spans:
            raise RunError(f"server accepted {accepted} spans, sent {n_spans}")
        for trace_id, span_ids in samples:
            read_back(PORTS["api"], trace_id, span_ids)
        cpu2 = proc_cpu_s(proc.pid)
        proc.send_signal(signal.SIGTERM)
        killer = threading.Timer(120, proc.kill)
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        killer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RunError(f"server exited with {proc.returncode} after SIGTERM: {log_tail(log.name)}")
        flushed = sum(len(fs) for _, _, fs in os.walk(os.path.join(data_dir, "blocks")))
        if flushed == 0:
            raise RunError("no block files after the shutdown flush")
        flush_cpu = usage.ru_utime + usage.ru_stime - cpu2
        ok = True
        return {"ingest_us": (cpu1 - cpu0) / n_spans * 1e6, "total_us": (cpu1 - cpu0 + flush_cpu) / n_spans * 1e6,
                "spans_per_s": n_spans / wall, "wall_s": wall}
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        log.close()
        if ok or not args.keep_failed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"  kept {work}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True, help="strata release binary")
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=512, help="spans per request (per service)")
    ap.add_argument("--concurrency", type=int, default=2, help="requests in flight, same for every protocol")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated subset")
    ap.add_argument("--no-generator", action="store_true", help="run the server with --generator false")
    ap.add_argument("--clients", default=os.environ.get("STRATA_PY_CLIENTS",
                                                        os.path.expanduser("~/.cache/strata-py-clients")),
                    help="directory from tests/clients/install.sh (protobuf, thrift, grpcio, exporter packages)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep-failed", action="store_true", help="keep the data dir and log of a failed run")
    args = ap.parse_args()
    sys.path.insert(0, args.clients)
    protos = [p for p in args.protocols.split(",") if p]
    for p in protos:
        if p not in PROTOCOLS:
            sys.exit(f"unknown protocol {p!r}; known: {', '.join(PROTOCOLS)}")

    t = time.time()
    spans, traces = generate(args.spans, args.seed)
    batches = batches_of(spans, args.batch)
    n = len(spans)
    n_attrs = sum(len(s.attrs) for s in spans) / n
    n_events = sum(len(s.events) for s in spans)
    print(f"data: {len(traces)} traces, {n} spans ({n / len(traces):.2f}/trace, {n_attrs:.1f} attributes/span, "
          f"{n_events} events), {len(batches)} requests of <= {args.batch} spans, {len(SERVICES)} services; "
          f"generated in {time.time() - t:.1f} s", flush=True)
    samples = [traces[0], traces[len(traces) // 2], traces[-1]]

    encoded = {}
    for p in protos:
        t = time.time()
        enc = PROTOCOLS[p][0]
        encoded[p] = [enc(svc, chunk) for svc, chunk in batches]
        print(f"encoded {p}: {sum(map(len, encoded[p])) / n:.1f} B/span in {time.time() - t:.1f} s", flush=True)
    del spans

    results = {p: [] for p in protos}
    for r in range(args.runs):
        for p in protos:
            try:
                res = one_run(args, p, encoded[p], n, samples)
            except RunError as e:
                print(f"FAILED: {p} run {r + 1}: {e}", file=sys.stderr)
                sys.exit(1)
            results[p].append(res)
            print(f"run {r + 1} {p:16s} ingest {res['ingest_us']:6.2f} us/span  with flush {res['total_us']:6.2f}"
                  f" us/span  {res['spans_per_s']:9,.0f} spans/s", flush=True)

    print()
    print(f"{n} spans, {len(batches)} requests, concurrency {args.concurrency}, {args.runs} runs, generator "
          f"{'off' if args.no_generator else 'on'}")
    print()
    print("| protocol | ingest CPU us/span, median [min-max] | with block flush, median | spans/s (wall), median "
          "| requests | wire bytes/span |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for p in protos:
        ing = [x["ingest_us"] for x in results[p]]
        tot = [x["total_us"] for x in results[p]]
        sps = [x["spans_per_s"] for x in results[p]]
        bps = sum(map(len, encoded[p])) / n
        summary[p] = {"runs": results[p], "ingest_us_median": statistics.median(ing), "ingest_us_min": min(ing),
                      "ingest_us_max": max(ing), "total_us_median": statistics.median(tot),
                      "spans_per_s_median": statistics.median(sps), "requests": len(encoded[p]),
                      "wire_bytes_per_span": bps}
        print(f"| {p} | {statistics.median(ing):.2f} [{min(ing):.2f}-{max(ing):.2f}] | {statistics.median(tot):.2f} "
              f"| {statistics.median(sps):,.0f} | {len(encoded[p])} | {bps:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"spans": n, "requests": len(batches), "concurrency": args.concurrency, "runs": args.runs,
                       "generator": not args.no_generator, "protocols": summary}, f, indent=1)


if __name__ == "__main__":
    main()
