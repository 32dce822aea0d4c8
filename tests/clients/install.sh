#!/usr/bin/env bash
# Installs the pinned Python exporters (requirements.txt) into a directory outside the
# repository and prints that directory; run emit.py with PYTHONPATH set to it.
#   dir="$(bash tests/clients/install.sh)" && PYTHONPATH="$dir" python3 tests/clients/emit.py ...
# The directory defaults to $HOME/.cache/strata-py-clients (STRATA_PY_CLIENTS overrides it).
# It is reinstalled only when requirements.txt changed since the last install.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${STRATA_PY_CLIENTS:-$HOME/.cache/strata-py-clients}"
req="$here/requirements.txt"
stamp="$dir/.strata-requirements.txt"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  rm -rf "$dir"
  mkdir -p "$dir"
  python3 -m pip install --quiet --disable-pip-version-check --no-input \
    --only-binary=:all: --target "$dir" -r "$req" >&2
  cp "$req" "$stamp"
fi
echo "$dir"
