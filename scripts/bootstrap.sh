#!/usr/bin/env bash
# Create .venv and install caremesh with its test, dev and bench extras (the bench's Faust rows
# and their tests need faust-streaming); fetch the Kafka jars. Build the local HAPI FHIR server
# (caremesh.local.hapi) once. Idempotent: reinstalls only when pyproject.toml changed, rebuilds the
# server only when its sources changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.caremesh-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing caremesh and its pinned dependencies"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,dev,bench]'
  echo "$want" > "$stamp"
fi
.venv/bin/caremesh kafka fetch >/dev/null
.venv/bin/python -m caremesh.local.hapi build >/dev/null
# The pseudonymisation engine's hot modules, compiled with mypyc (about a minute, only when
# their sources changed); without a compiler the pure Python engine runs, slower.
if ! .venv/bin/caremesh native build --quiet; then
  echo "bootstrap: the pseudonymisation engine stays pure Python (see above)" >&2
fi
