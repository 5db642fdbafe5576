#!/usr/bin/env bash
# Validate docker-compose.yml and deploy/k8s/ against the JSON schemas vendored in deploy/schemas/,
# and cross-check the monitoring files; offline (no schema is downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# jsonschema==4.26.0 is not yet in pyproject.toml's extras; install it into the venv once.
"$PY" -c "import jsonschema" 2>/dev/null || "$PY" -m pip install -q "jsonschema==4.26.0"
exec "$PY" scripts/check_deploy.py
