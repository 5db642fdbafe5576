#!/usr/bin/env bash
# Static checks: ruff (lint, with bandit rules), ruff format, mypy --strict on src/ and bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
