#!/usr/bin/env bash
# The main job: the local broker, the catalogue topics and every service, fed by a synthetic
# territory. `scripts/demo.sh [SECONDS]` runs unattended for that long; without it, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/caremesh demo ${1:+--duration "$1"}
