#!/usr/bin/env bash
# Installs what the tests need (from the package registries), then runs every check and test.
# Usage: tests/run.sh            (from anywhere; a fresh machine needs nothing else)
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse one build cache outside the clone, so repeated runs on a machine build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# S3 tests need a real S3 server: moto, from PyPI.
if ! command -v moto_server >/dev/null 2>&1; then
  echo "== installing moto (S3 test server)"
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]==5.2.1"
  hash -r
fi
if ! command -v moto_server >/dev/null 2>&1; then
  bin_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  export PATH="$bin_dir:$PATH"
fi

# Installs a Debian package (refreshing the package lists once if the first attempt fails).
install_deb() {
  echo "== installing $1 (Debian package)"
  local as_root=""
  [ "$(id -u)" = 0 ] || as_root="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $as_root apt-get install -y --no-install-recommends "$1" >/dev/null 2>&1; then
    $as_root apt-get update >/dev/null
    $as_root apt-get install -y --no-install-recommends "$1" >/dev/null
  fi
}

# The service-graph test (tests/generator.rs) is scraped by a real Prometheus: Debian's package.
command -v prometheus >/dev/null 2>&1 || install_deb prometheus

# The web UI test (tests/ui.rs) drives Debian's Chromium with playwright-core (npm, installed by the test into
# ~/.cache/strata-ui-test); the Zipkin/Jaeger tests run the OpenTelemetry Python exporters (PyPI, installed by
# tests/clients/install.sh into ~/.cache/strata-py-clients).
[ -x /usr/bin/chromium ] || install_deb chromium
echo "== Python Zipkin/Jaeger clients: $(bash tests/clients/install.sh)"

# TraceQL corpus (Tempo's, kept outside the repo): its test is #[ignore]d and run below where the corpus exists.
corpus="$(pwd)/../shared/traceql/test_examples.yaml"
if [ -z "${TRACEQL_CORPUS:-}" ] && [ -f "$corpus" ]; then
  export TRACEQL_CORPUS="$corpus"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
if [ -x deploy/validate.sh ]; then
  echo "== deploy/validate.sh"
  deploy/validate.sh
fi
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --retries 0
else
  cargo test --workspace --no-fail-fast
fi
if [ -n "${TRACEQL_CORPUS:-}" ]; then
  echo "== TraceQL corpus ($TRACEQL_CORPUS)"
  cargo test -p query-lang --test corpus --quiet -- --ignored
else
  echo "== TraceQL corpus: NOT RUN, $corpus does not exist on this machine"
fi
