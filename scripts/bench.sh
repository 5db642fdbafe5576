#!/usr/bin/env bash
# The bench command: starts the local broker unless one answers already (and stops it again if it
# started it), then runs `python -m bench` with the given arguments.
set -uo pipefail
cd "$(dirname "$0")/.."
started=0
if ! .venv/bin/caremesh kafka status >/dev/null 2>&1; then
  .venv/bin/caremesh kafka up || { echo "bench: the local broker did not start" >&2; exit 1; }
  started=1
fi
stop_broker() { if [ "$started" = 1 ]; then .venv/bin/caremesh kafka down || true; fi; }
trap stop_broker EXIT INT TERM
.venv/bin/python -m bench "$@"
