#!/usr/bin/env bash
# Validates everything under deploy/ without Docker or a cluster:
#   - every YAML file parses
#   - compose files: services have image or build, ports are strings, references resolve
#   - collector config, Grafana data source: the pipeline and the fields Strata relies on
#   - Kubernetes manifests: apiVersion/kind/metadata.name, kustomization resources, cross-references
#   - strata.example.yaml (and the ConfigMap's strata.yaml): only known keys, well-typed values
#   - Dockerfile: stages, ports, user, sources; hadolint when installed (skipped otherwise)
# Needs python3 and PyYAML (installed with pip if missing). Exits non-zero on any failure and ends with
#   deploy: N passed, M failed
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! command -v python3 >/dev/null 2>&1; then
    echo "FAIL python3 is required" >&2
    echo "deploy: 0 passed, 1 failed"
    exit 1
fi

if ! python3 -c 'import yaml' >/dev/null 2>&1; then
    echo "PyYAML missing; installing with pip" >&2
    python3 -m pip install --quiet pyyaml >/dev/null 2>&1 \
        || python3 -m pip install --quiet --user pyyaml >/dev/null 2>&1 \
        || python3 -m pip install --quiet --break-system-packages pyyaml >/dev/null 2>&1 \
        || true
    if ! python3 -c 'import yaml' >/dev/null 2>&1; then
        echo "FAIL could not install PyYAML (pip install pyyaml)" >&2
        echo "deploy: 0 passed, 1 failed"
        exit 1
    fi
fi

exec python3 - "$DEPLOY_DIR" <<'PY'
import ipaddress
import os
import re
import shutil
import subprocess
import sys

import yaml

DEPLOY = sys.argv[1]
REPO = os.path.dirname(DEPLOY)

passed = failed = skipped = 0


def rel(path):
    return os.path.relpath(path, REPO)


def ok(name):
    global passed
    passed += 1
    print(f"ok   {name}")


def fail(name, why):
    global failed
    failed += 1
    print(f"FAIL {name}: {why}")


def skip(name, why):
    global skipped
    skipped += 1
    print(f"skip {name}: {why}")


def crashed(kind, value, tb):
    """A check that crashes on malformed input still counts as a failure, never as a pass."""
    import traceback

    traceback.print_exception(kind, value, tb)
    print(f"FAIL validator crashed: {kind.__name__}: {value}")
    print(f"deploy: {passed} passed, {failed + 1} failed" + (f", {skipped} skipped" if skipped else ""))
    sys.exit(1)


sys.excepthook = crashed


def check(name, problems):
    """Records one check: passes when `problems` (a list of strings) is empty."""
    if problems:
        fail(name, "; ".join(problems))
    else:
        ok(name)


# ---------------------------------------------------------------------------------------------------
# Strata's configuration schema (src/config.rs: FileConfig / FileS3, deny_unknown_fields).

TOP_KEYS = {
    "data_dir", "http_addr", "otlp_grpc_addr", "otlp_http_addr", "storage", "local_path", "s3",
    "zipkin_addr", "jaeger_grpc_addr", "jaeger_thrift_http_addr",
    "max_block_spans", "max_block_bytes", "max_block_age", "max_request_bytes", "shutdown_timeout", "log",
    "query_timeout", "max_query_scan_bytes", "max_response_bytes", "query_memory_bytes",
    "metrics_max_range", "metrics_max_intervals", "metrics_max_series",
    "target", "compaction", "compaction_interval", "compaction_window", "compaction_target_bytes",
    "compaction_min_inputs", "compaction_max_inputs", "compaction_grace", "retention", "tenant_retention",
    "blocklist_refresh", "footer_cache_bytes", "trace_index_cache_bytes", "column_cache_bytes",
    "max_inflight_bytes", "max_trace_idle", "generator", "generator_max_series", "generator_max_label_values",
}
S3_KEYS = {"endpoint", "bucket", "prefix", "region", "path_style"}
ENV_VARS = {
    "STRATA_CONFIG", "STRATA_DATA_DIR", "STRATA_HTTP_ADDR", "STRATA_OTLP_GRPC_ADDR", "STRATA_OTLP_HTTP_ADDR",
    "STRATA_STORAGE", "STRATA_LOCAL_PATH", "STRATA_S3_ENDPOINT", "STRATA_S3_BUCKET", "STRATA_S3_PREFIX",
    "STRATA_S3_PATH_STYLE", "STRATA_MAX_BLOCK_SPANS", "STRATA_MAX_BLOCK_BYTES", "STRATA_MAX_BLOCK_AGE",
    "STRATA_MAX_REQUEST_BYTES", "STRATA_SHUTDOWN_TIMEOUT", "STRATA_LOG",
    "STRATA_QUERY_TIMEOUT", "STRATA_MAX_QUERY_SCAN_BYTES", "STRATA_MAX_RESPONSE_BYTES", "STRATA_QUERY_MEMORY_BYTES",
    "STRATA_METRICS_MAX_RANGE", "STRATA_METRICS_MAX_INTERVALS", "STRATA_METRICS_MAX_SERIES",
    "STRATA_TARGET", "STRATA_COMPACTION", "STRATA_COMPACTION_INTERVAL", "STRATA_COMPACTION_WINDOW",
    "STRATA_COMPACTION_TARGET_BYTES", "STRATA_COMPACTION_MIN_INPUTS", "STRATA_COMPACTION_MAX_INPUTS",
    "STRATA_COMPACTION_GRACE", "STRATA_RETENTION", "STRATA_BLOCKLIST_REFRESH", "STRATA_FOOTER_CACHE_BYTES",
    "STRATA_TRACE_INDEX_CACHE_BYTES", "STRATA_COLUMN_CACHE_BYTES", "STRATA_MAX_INFLIGHT_BYTES", "STRATA_MAX_TRACE_IDLE",
    "STRATA_GENERATOR", "STRATA_GENERATOR_MAX_SERIES", "STRATA_GENERATOR_MAX_LABEL_VALUES",
}
HUMANTIME = re.compile(
    r"^\s*(\d+\s*(nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h"
    r"|days|day|d|weeks|week|w|months|month|M|years|year|y)\s*)+$"
)
UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_secs(text):
    """Seconds in a humantime duration (approximate units beyond weeks are not used here)."""
    total = 0.0
    for num, unit in re.findall(r"(\d+)\s*([a-zA-Z]+)", text):
        u = {"nsec": "ns", "usec": "us", "msec": "ms", "seconds": "s", "second": "s", "sec": "s",
             "minutes": "m", "minute": "m", "min": "m", "hours": "h", "hour": "h", "hr": "h",
             "days": "d", "day": "d", "weeks": "w", "week": "w"}.get(unit, unit)
        total += int(num) * UNITS.get(u, 0)
    return total


def socket_addr_ok(v):
    """Rust's SocketAddr: IPv4:port or [IPv6]:port, no host names."""
    if not isinstance(v, str):
        return False
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)", v) or re.fullmatch(r"([0-9.]+):(\d+)", v)
    if not m:
        return False
    try:
        ipaddress.ip_address(m.group(1))
    except ValueError:
        return False
    return 0 <= int(m.group(2)) <= 65535


def positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def config_problems(cfg, require_all=False):
    """Problems with a Strata YAML config document."""
    p = []
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        return ["top level is not a mapping"]
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        p.append(f"unknown keys {sorted(unknown)}")
    s3 = cfg.get("s3")
    if s3 is not None and not isinstance(s3, dict):
        p.append("s3 is not a mapping")
        s3 = None
    if s3:
        unknown = set(s3) - S3_KEYS
        if unknown:
            p.append(f"unknown s3 keys {sorted(unknown)}")
    if require_all:
        missing = TOP_KEYS - set(cfg)
        if missing:
            p.append(f"example does not cover {sorted(missing)}")
        missing = S3_KEYS - set(s3 or {})
        if missing:
            p.append(f"example does not cover s3.{sorted(missing)}")
    for k in ("data_dir", "local_path", "log"):
        if k in cfg and not isinstance(cfg[k], str):
            p.append(f"{k} must be a string")
    for k in ("http_addr", "otlp_grpc_addr", "otlp_http_addr"):
        if k in cfg and not socket_addr_ok(cfg[k]):
            p.append(f"{k}={cfg[k]!r} is not ip:port")
    for k in ("zipkin_addr", "jaeger_grpc_addr", "jaeger_thrift_http_addr"):
        if k in cfg and cfg[k] != "off" and not socket_addr_ok(cfg[k]):
            p.append(f"{k}={cfg[k]!r} is neither ip:port nor off")
    if "storage" in cfg and cfg["storage"] not in ("local", "s3"):
        p.append(f"storage={cfg['storage']!r} is not local|s3")
    for k in ("max_block_spans", "max_block_bytes", "max_request_bytes", "max_query_scan_bytes",
              "max_response_bytes", "query_memory_bytes", "compaction_target_bytes", "compaction_min_inputs",
              "compaction_max_inputs", "footer_cache_bytes", "trace_index_cache_bytes", "column_cache_bytes", "max_inflight_bytes",
              "metrics_max_intervals", "metrics_max_series", "generator_max_series", "generator_max_label_values"):
        if k in cfg and not positive_int(cfg[k]):
            p.append(f"{k}={cfg[k]!r} is not a positive integer (bytes/spans, no units)")
    for k in ("max_block_age", "max_trace_idle", "shutdown_timeout", "query_timeout", "compaction_interval", "compaction_window",
              "compaction_grace", "retention", "blocklist_refresh", "metrics_max_range"):
        if k in cfg and not (isinstance(cfg[k], str) and HUMANTIME.match(cfg[k])):
            p.append(f"{k}={cfg[k]!r} is not a duration string like \"30s\"")
    if "target" in cfg and cfg["target"] not in ("all", "compactor"):
        p.append(f"target={cfg['target']!r} is not all|compactor")
    if "compaction" in cfg and not isinstance(cfg["compaction"], bool):
        p.append("compaction must be true/false")
    tr = cfg.get("tenant_retention")
    if tr is not None and not (isinstance(tr, dict) and all(isinstance(v, str) and HUMANTIME.match(v) for v in tr.values())):
        p.append("tenant_retention must map tenants to duration strings")
    if s3:
        for k in ("endpoint", "bucket", "prefix", "region"):
            if k in s3 and s3[k] is not None and not isinstance(s3[k], str):
                p.append(f"s3.{k} must be a string")
        if "path_style" in s3 and not isinstance(s3["path_style"], bool):
            p.append("s3.path_style must be true/false")
        ep = s3.get("endpoint")
        if ep and not re.match(r"^https?://", ep):
            p.append(f"s3.endpoint={ep!r} must start with http:// or https://")
    if cfg.get("storage") == "s3" and not (s3 or {}).get("bucket"):
        p.append("storage is s3 but s3.bucket is empty")
    return p


def env_problems(env, where):
    """Problems with STRATA_* variables given to the binary (name known, value well-formed)."""
    p = []
    for k, v in env.items():
        if k.startswith("STRATA_") and k not in ENV_VARS:
            p.append(f"{where}: unknown variable {k}")
        if v is None:
            continue
        v = str(v)
        if "${" in v:  # compose interpolation; value known only at run time
            continue
        if k in ("STRATA_MAX_BLOCK_AGE", "STRATA_SHUTDOWN_TIMEOUT") and not HUMANTIME.match(v):
            p.append(f"{where}: {k}={v!r} is not a duration")
        if k in ("STRATA_MAX_BLOCK_SPANS", "STRATA_MAX_BLOCK_BYTES", "STRATA_MAX_REQUEST_BYTES") and not (
            v.isdigit() and int(v) > 0
        ):
            p.append(f"{where}: {k}={v!r} is not a positive integer")
        if k == "STRATA_STORAGE" and v not in ("local", "s3"):
            p.append(f"{where}: {k}={v!r} is not local|s3")
        if k == "STRATA_S3_PATH_STYLE" and v not in ("true", "false"):
            p.append(f"{where}: {k}={v!r} is not true|false")
        if k in ("STRATA_HTTP_ADDR", "STRATA_OTLP_GRPC_ADDR", "STRATA_OTLP_HTTP_ADDR") and not socket_addr_ok(v):
            p.append(f"{where}: {k}={v!r} is not ip:port")
    return p


# ---------------------------------------------------------------------------------------------------
# 1. Every YAML file parses.

docs = {}  # path -> list of documents
for root, dirs, files in os.walk(DEPLOY):
    dirs.sort()
    for f in sorted(files):
        if not f.endswith((".yaml", ".yml")):
            continue
        path = os.path.join(root, f)
        try:
            with open(path, encoding="utf-8") as fh:
                docs[path] = [d for d in yaml.safe_load_all(fh)]
            ok(f"yaml parses: {rel(path)}")
        except yaml.YAMLError as e:
            fail(f"yaml parses: {rel(path)}", str(e).replace("\n", " "))


def doc(name):
    return (docs.get(os.path.join(DEPLOY, name)) or [None])[0]


# ---------------------------------------------------------------------------------------------------
# 2. Dockerfile.

DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")


def dockerfile_instructions(path):
    """(INSTRUCTION, args) pairs, continuation lines joined, comments and parser directives dropped."""
    out, cur = [], ""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            s = line.rstrip("\n")
            if not cur and (not s.strip() or s.lstrip().startswith("#")):
                continue
            if cur and s.lstrip().startswith("#"):
                continue
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            cur += s
            parts = cur.strip().split(None, 1)
            out.append((parts[0].upper(), parts[1] if len(parts) > 1 else ""))
            cur = ""
    return out


dockerfile_health = False
if not os.path.exists(DOCKERFILE):
    fail("Dockerfile exists", "deploy/Dockerfile is missing")
else:
    ins = dockerfile_instructions(DOCKERFILE)
    p = []
    froms = [a for i, a in ins if i == "FROM"]
    if len(froms) < 2:
        p.append("not multi-stage")
    else:
        if not re.match(r"^rust:1-bookworm\s+AS\s+\w+", froms[0], re.I):
            p.append(f"builder stage is {froms[0]!r}, expected rust:1-bookworm AS <name>")
        if froms[-1].split()[0] != "debian:bookworm-slim":
            p.append(f"runtime stage is {froms[-1]!r}, expected debian:bookworm-slim")
    runs = " ".join(a for i, a in ins if i == "RUN")
    if not re.search(r"cargo build\b[^&;]*--release[^&;]*--bin strata", runs):
        p.append("no `cargo build --release --bin strata`")
    exposed = set(" ".join(a for i, a in ins if i == "EXPOSE").split())
    for port in ("3200", "4317", "4318"):
        if port not in exposed and f"{port}/tcp" not in exposed:
            p.append(f"port {port} not exposed")
    envs = " ".join(a for i, a in ins if i == "ENV")
    if not re.search(r"\bSTRATA_DATA_DIR=/data\b", envs):
        p.append("ENV STRATA_DATA_DIR=/data missing")
    if not any(i == "VOLUME" and "/data" in a for i, a in ins):
        p.append("VOLUME /data missing")
    users = [a.strip() for i, a in ins if i == "USER"]
    if not users:
        p.append("no USER (runs as root)")
    elif users[-1].split(":")[0] in ("root", "0"):
        p.append(f"final USER is {users[-1]}")
    if not any(i == "ENTRYPOINT" and "strata" in a for i, a in ins):
        p.append("ENTRYPOINT does not run strata")
    check("Dockerfile: stages, build command, ports, env, volume, non-root user", p)
    dockerfile_health = any(i == "HEALTHCHECK" and "/ready" in a for i, a in ins)

    # COPY sources of the builder exist in the repository (the build context) and are not ignored.
    p = []
    ignore_file = DOCKERFILE + ".dockerignore"
    ignored = set()
    if os.path.exists(ignore_file):
        with open(ignore_file, encoding="utf-8") as fh:
            ignored = {l.strip().rstrip("/") for l in fh if l.strip() and not l.startswith("#")}
    for i, a in ins:
        if i != "COPY" or "--from" in a:
            continue
        args = [x for x in a.split() if not x.startswith("--")]
        for src in args[:-1]:
            if not os.path.exists(os.path.join(REPO, src)):
                p.append(f"COPY source {src} not in repo root")
            if src.rstrip("/") in ignored:
                p.append(f"COPY source {src} excluded by Dockerfile.dockerignore")
    for must in ("target", ".git"):
        if must not in ignored:
            p.append(f"Dockerfile.dockerignore should exclude {must}")
    check("Dockerfile: COPY sources exist in the build context (repo root)", p)

    hadolint = shutil.which("hadolint")
    if hadolint:
        r = subprocess.run(
            [hadolint, "--ignore", "DL3008", DOCKERFILE], capture_output=True, text=True
        )
        if r.returncode == 0:
            ok("Dockerfile: hadolint")
        else:
            fail("Dockerfile: hadolint", (r.stdout + r.stderr).strip().replace("\n", " | "))
    else:
        skip("Dockerfile: hadolint", "hadolint not installed")


# ---------------------------------------------------------------------------------------------------
# 3. Compose files.

PORT_RE = re.compile(r"^(?:(?:[\d.]+|\[[0-9a-fA-F:]+\]):)?(?:\d+(?:-\d+)?:)?\d+(?:-\d+)?(?:/(?:tcp|udp))?$")
COMPOSE_TOP = {"name", "version", "services", "volumes", "networks", "configs", "secrets", "include"}

for cname in ("docker-compose.yaml", "docker-compose.local.yaml"):
    cpath = os.path.join(DEPLOY, cname)
    c = doc(cname)
    if not isinstance(c, dict) or not isinstance(c.get("services"), dict) or not c["services"]:
        fail(f"{cname}: has services", "missing or empty services mapping")
        continue
    p = []
    bad_top = [k for k in c if k not in COMPOSE_TOP and not str(k).startswith("x-")]
    if bad_top:
        p.append(f"unknown top-level keys {bad_top}")
    services = c["services"]
    named_volumes = set((c.get("volumes") or {}).keys())
    for sname, s in services.items():
        where = f"{sname}"
        if not isinstance(s, dict):
            p.append(f"{where}: not a mapping")
            continue
        if "image" not in s and "build" not in s:
            p.append(f"{where}: neither image nor build")
        b = s.get("build")
        if b is not None:
            ctx = b if isinstance(b, str) else b.get("context", ".")
            ctx_path = os.path.normpath(os.path.join(DEPLOY, ctx))
            if not os.path.isdir(ctx_path):
                p.append(f"{where}: build context {ctx} does not exist")
            if isinstance(b, dict) and b.get("dockerfile"):
                if not os.path.isfile(os.path.join(ctx_path, b["dockerfile"])):
                    p.append(f"{where}: dockerfile {b['dockerfile']} not found in context {ctx}")
        for port in s.get("ports") or []:
            if isinstance(port, dict):  # long syntax
                if "target" not in port:
                    p.append(f"{where}: long-form port without target")
            elif not isinstance(port, str):
                p.append(f"{where}: port {port!r} is not a string (quote it)")
            elif not PORT_RE.match(port):
                p.append(f"{where}: port {port!r} is malformed")
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        for k, v in env.items():
            if v is not None and not isinstance(v, str):
                p.append(f"{where}: environment {k}={v!r} is not a string (quote it)")
        if sname == "strata" or "strata" in str(s.get("image", "")):
            p += env_problems(env, where)
        for v in s.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith((".", "/")):
                if src.startswith(".") and not os.path.exists(os.path.normpath(os.path.join(DEPLOY, src))):
                    p.append(f"{where}: bind mount source {src} does not exist")
            elif src and src not in named_volumes:
                p.append(f"{where}: named volume {src} not declared under volumes:")
        deps = s.get("depends_on") or []
        dep_items = deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)
        for dep, cond in dep_items:
            if dep not in services:
                p.append(f"{where}: depends_on unknown service {dep}")
                continue
            if (cond or {}).get("condition") == "service_healthy":
                target = services[dep]
                has_hc = "healthcheck" in target or ("build" in target and dockerfile_health)
                if not has_hc:
                    p.append(f"{where}: waits for {dep} to be healthy but {dep} has no healthcheck")
        for key in ("restart",):
            if key in s and s[key] not in ("no", "always", "on-failure", "unless-stopped"):
                p.append(f"{where}: restart={s[key]!r} (quote \"no\")")
    check(f"{cname}: services, ports, environment, volumes, depends_on", p)

full = doc("docker-compose.yaml") or {}
svc = (full.get("services") or {}) if isinstance(full, dict) else {}
p = []
for need in ("strata", "minio", "otel-collector", "grafana"):
    if need not in svc:
        p.append(f"no {need} service")
if not any("minio/mc" in str(s.get("image", "")) for s in svc.values() if isinstance(s, dict)):
    p.append("no minio/mc init container")
if "otel-collector" in svc and "opentelemetry-collector-contrib" not in str(svc["otel-collector"].get("image")):
    p.append("collector is not otel/opentelemetry-collector-contrib")
senv = (svc.get("strata") or {}).get("environment") or {}
if senv.get("STRATA_STORAGE") != "s3" or not str(senv.get("STRATA_S3_ENDPOINT", "")).startswith("http://minio:"):
    p.append("strata is not configured for S3 on MinIO")
for k in ("STRATA_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    if not senv.get(k):
        p.append(f"strata has no {k}")
check("docker-compose.yaml: strata + MinIO + collector + Grafana wiring", p)

local = doc("docker-compose.local.yaml") or {}
lsvc = (local.get("services") or {}) if isinstance(local, dict) else {}
p = []
if list(lsvc) != ["strata"]:
    p.append(f"expected strata alone, got {list(lsvc)}")
elif not any(str(v).endswith(":/data") for v in lsvc["strata"].get("volumes") or []):
    p.append("strata has no /data volume")
check("docker-compose.local.yaml: strata alone with a local volume", p)


# ---------------------------------------------------------------------------------------------------
# 4. OpenTelemetry Collector config.

oc = doc("otel-collector.yaml")
p = []
if not isinstance(oc, dict):
    p.append("not a mapping")
else:
    pipelines = ((oc.get("service") or {}).get("pipelines") or {})
    if "traces" not in pipelines:
        p.append("no traces pipeline")
    for pname, pl in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for comp in pl.get(section) or []:
                if comp not in (oc.get(section) or {}):
                    p.append(f"pipeline {pname} uses undefined {section[:-1]} {comp}")
    for ext in (oc.get("service") or {}).get("extensions") or []:
        if ext not in (oc.get("extensions") or {}):
            p.append(f"undefined extension {ext}")
    tr = pipelines.get("traces") or {}
    if not any(x.split("/")[0] == "batch" for x in tr.get("processors") or []):
        p.append("traces pipeline has no batch processor")
    exps = [x for x in tr.get("exporters") or [] if x.split("/")[0] == "otlp"]
    if not exps:
        p.append("traces pipeline has no otlp exporter")
    for x in exps:
        e = (oc.get("exporters") or {}).get(x) or {}
        if not str(e.get("endpoint", "")).endswith(":4317"):
            p.append(f"{x}: endpoint should be Strata's gRPC port 4317")
        if e.get("compression") != "gzip":
            p.append(f"{x}: compression is not gzip")
        if ((e.get("tls") or {}).get("insecure")) is not True:
            p.append(f"{x}: tls.insecure is not true")
    with open(os.path.join(DEPLOY, "otel-collector.yaml"), encoding="utf-8") as fh:
        text = fh.read()
    if not re.search(r"^\s*#\s*otlphttp", text, re.M):
        p.append("no commented otlphttp alternative")
    if not re.search(r"^\s*#\s*X-Scope-OrgID:", text, re.M):
        p.append("no commented X-Scope-OrgID header example")
check("otel-collector.yaml: pipeline references, batch, otlp exporter (gzip, insecure)", p)


# ---------------------------------------------------------------------------------------------------
# 5. Grafana data source.

gp = "grafana/provisioning/datasources/strata.yaml"
g = doc(gp)
p = []
if not isinstance(g, dict) or g.get("apiVersion") != 1:
    p.append("apiVersion must be 1")
dss = (g or {}).get("datasources") or [] if isinstance(g, dict) else []
if len(dss) != 1:
    p.append("expected exactly one data source")
for ds in dss:
    if ds.get("type") != "tempo":
        p.append(f"type is {ds.get('type')!r}, expected tempo")
    if ds.get("url") != "http://strata:3200":
        p.append(f"url is {ds.get('url')!r}")
    if ds.get("uid") != "strata":
        p.append(f"uid is {ds.get('uid')!r}")
    if not ds.get("name"):
        p.append("no name")
    if "jsonData" in ds and not isinstance(ds["jsonData"], dict):
        p.append("jsonData is not a mapping")
check(f"{gp}: tempo data source at http://strata:3200", p)
fc = (svc.get("grafana") or {}).get("volumes") or []
check(
    "docker-compose.yaml: Grafana mounts the provisioning directory",
    [] if any(str(v).startswith("./grafana/provisioning:/etc/grafana/provisioning") for v in fc)
    else ["./grafana/provisioning is not mounted at /etc/grafana/provisioning"],
)


# ---------------------------------------------------------------------------------------------------
# 6. Kubernetes manifests.

K8S = os.path.join(DEPLOY, "kubernetes")
k8s_objs = []  # (file, doc)
for path in sorted(docs):
    if os.path.dirname(path) != K8S or os.path.basename(path) == "kustomization.yaml":
        continue
    p = []
    for i, d in enumerate(docs[path]):
        if d is None:
            continue
        if not isinstance(d, dict):
            p.append(f"doc {i}: not a mapping")
            continue
        for k in ("apiVersion", "kind"):
            if not d.get(k):
                p.append(f"doc {i}: no {k}")
        if not ((d.get("metadata") or {}).get("name")):
            p.append(f"doc {i}: no metadata.name")
        k8s_objs.append((os.path.basename(path), d))
    check(f"kubernetes/{os.path.basename(path)}: apiVersion, kind, metadata.name", p)

kz = doc("kubernetes/kustomization.yaml")
p = []
if not isinstance(kz, dict) or kz.get("kind") != "Kustomization":
    p.append("not a Kustomization")
else:
    res = kz.get("resources") or []
    for r in res:
        if not os.path.exists(os.path.join(K8S, r)):
            p.append(f"resource {r} does not exist")
    for path in docs:
        b = os.path.basename(path)
        if os.path.dirname(path) == K8S and b != "kustomization.yaml" and b not in res:
            p.append(f"{b} not listed in resources")
check("kubernetes/kustomization.yaml: resources exist and cover every manifest", p)


def objs(kind):
    return [d for _, d in k8s_objs if d.get("kind") == kind]


p = []
sts_list = objs("StatefulSet")
if len(sts_list) != 1:
    p.append(f"expected one StatefulSet, found {len(sts_list)}")
def by_name(kind):
    return {(d.get("metadata") or {}).get("name"): d for d in objs(kind)}


cms = by_name("ConfigMap")
secrets = by_name("Secret")
services = by_name("Service")
grace = None
pod_labels = {}
container_ports = {}
for sts in sts_list:
    spec = sts.get("spec") or {}
    if spec.get("replicas") != 1:
        p.append("replicas is not 1")
    if spec.get("serviceName") not in services:
        p.append(f"serviceName {spec.get('serviceName')!r} is not a Service here")
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    tmpl = spec.get("template") or {}
    pod_labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
        p.append("selector does not match the pod template labels")
    pod = tmpl.get("spec") or {}
    grace = pod.get("terminationGracePeriodSeconds")
    if grace != 60:
        p.append(f"terminationGracePeriodSeconds is {grace!r}, expected 60")
    cs = pod.get("containers") or []
    if len(cs) != 1:
        p.append("expected one container")
    claims = {(v.get("metadata") or {}).get("name") for v in spec.get("volumeClaimTemplates") or []}
    vols = {v.get("name"): v for v in pod.get("volumes") or []}
    for c in cs:
        container_ports = {cp.get("name"): cp.get("containerPort") for cp in c.get("ports") or []}
        for port in (3200, 4317, 4318):
            if port not in container_ports.values():
                p.append(f"container does not declare port {port}")

        def probe_ok(name, path):
            pr = (c.get(name) or {}).get("httpGet") or {}
            port = pr.get("port")
            port = container_ports.get(port, port)
            if pr.get("path") != path or port != 3200:
                p.append(f"{name} is not GET {path} on :3200")

        probe_ok("readinessProbe", "/ready")
        probe_ok("livenessProbe", "/api/echo")
        if "lifecycle" in c and (c["lifecycle"] or {}).get("preStop"):
            p.append("preStop hook present (SIGTERM already flushes)")
        mounts = {m.get("mountPath"): m.get("name") for m in c.get("volumeMounts") or []}
        if mounts.get("/data") not in claims:
            p.append("/data is not mounted from a volumeClaimTemplate")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in vols and m.get("name") not in claims:
                p.append(f"volumeMount {m.get('name')} has no volume")
        env = {}
        for e in c.get("env") or []:
            env[e.get("name")] = e.get("value")
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                sec = secrets.get(ref.get("name"))
                data = {**((sec or {}).get("data") or {}), **((sec or {}).get("stringData") or {})}
                if sec is None:
                    p.append(f"env {e.get('name')} references missing Secret {ref.get('name')}")
                elif ref.get("key") not in data:
                    p.append(f"env {e.get('name')} references missing key {ref.get('key')}")
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref and ref.get("name") not in cms:
                p.append(f"env {e.get('name')} references missing ConfigMap {ref.get('name')}")
        for src in c.get("envFrom") or []:
            for kind, known in (("secretRef", secrets), ("configMapRef", cms)):
                if kind in src and (src[kind] or {}).get("name") not in known:
                    p.append(f"envFrom {kind} {(src[kind] or {}).get('name')} is missing")
        if not any(k in env for k in ("AWS_ACCESS_KEY_ID",)) and not c.get("envFrom"):
            p.append("S3 credentials are not passed via env")
        p += env_problems(env, "statefulset env")
        cfg_path = env.get("STRATA_CONFIG")
        if cfg_path:
            mdir = os.path.dirname(cfg_path)
            vname = mounts.get(mdir)
            cmname = ((vols.get(vname) or {}).get("configMap") or {}).get("name")
            if cmname not in cms:
                p.append(f"STRATA_CONFIG {cfg_path} is not on a mounted ConfigMap")
            elif os.path.basename(cfg_path) not in (cms[cmname].get("data") or {}):
                p.append(f"ConfigMap {cmname} has no key {os.path.basename(cfg_path)}")
check("kubernetes: StatefulSet probes, grace period, PVC, config and secret references", p)

p = []
strata_svc = services.get("strata")
if not strata_svc:
    p.append("no Service named strata")
else:
    sp = {x.get("port"): x for x in (strata_svc.get("spec") or {}).get("ports") or []}
    for port in (3200, 4317, 4318):
        if port not in sp:
            p.append(f"Service does not expose {port}")
    g4317 = sp.get(4317) or {}
    if g4317.get("name") != "grpc-otlp" or g4317.get("appProtocol") != "grpc":
        p.append("port 4317 must be named grpc-otlp with appProtocol grpc")
for name, s in services.items():
    sel = (s.get("spec") or {}).get("selector") or {}
    if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
        p.append(f"Service {name} selector does not match the pods")
    for x in (s.get("spec") or {}).get("ports") or []:
        t = x.get("targetPort", x.get("port"))
        if isinstance(t, str) and t not in container_ports:
            p.append(f"Service {name} targetPort {t} is not a container port name")
check("kubernetes: Service ports 3200/4317/4318, grpc-otlp appProtocol grpc, selectors", p)

for name, cm in cms.items():
    for key, text in (cm.get("data") or {}).items():
        if key.endswith((".yaml", ".yml")):
            try:
                cfg = yaml.safe_load(text)
                cp = config_problems(cfg)
                st = (cfg or {}).get("shutdown_timeout")
                if st and grace is not None and duration_secs(st) >= grace:
                    cp.append(f"shutdown_timeout {st} is not below terminationGracePeriodSeconds {grace}")
            except yaml.YAMLError as e:
                cp = [f"does not parse: {e}"]
            check(f"kubernetes: ConfigMap {name}/{key} is a valid Strata config", cp)

kubectl = shutil.which("kubectl")
if kubectl:
    try:
        r = subprocess.run([kubectl, "kustomize", K8S], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            ok("kubernetes: kubectl kustomize builds (optional)")
        else:
            fail("kubernetes: kubectl kustomize builds (optional)", r.stderr.strip().replace("\n", " | "))
    except (OSError, subprocess.TimeoutExpired) as e:
        skip("kubernetes: kubectl kustomize builds (optional)", f"kubectl unusable: {e}")
else:
    skip("kubernetes: kubectl kustomize builds (optional)", "kubectl not installed")


# ---------------------------------------------------------------------------------------------------
# 7. Example config: only known keys, every key covered, values well-typed.

ex = doc("strata.example.yaml")
check("strata.example.yaml: exactly the known keys, well-typed", config_problems(ex, require_all=True))


# ---------------------------------------------------------------------------------------------------
# 8. README mentions every file.

readme = os.path.join(DEPLOY, "README.md")
p = []
if not os.path.exists(readme):
    p.append("deploy/README.md missing")
else:
    with open(readme, encoding="utf-8") as fh:
        text = fh.read()
    for root, dirs, files in os.walk(DEPLOY):
        for f in files:
            r = os.path.relpath(os.path.join(root, f), DEPLOY)
            if r == "README.md":
                continue
            if r not in text and f not in text:
                p.append(f"{r} not mentioned")
check("README.md: mentions every file", p)

summary = f"deploy: {passed} passed, {failed} failed"
if skipped:
    summary += f", {skipped} skipped"
print(summary)
sys.exit(1 if failed else 0)
PY
