#!/usr/bin/env bash
# The bench command: starts the local broker unless one answers already (and stops it again if it
# started it), then runs `python -m bench` with the given arguments.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/broker.sh
ensure_broker bench
.venv/bin/python -m bench "$@"
