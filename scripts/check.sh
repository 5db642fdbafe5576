#!/usr/bin/env bash
# Static checks: ruff (lint, with bandit rules), ruff format, mypy --strict on src/ and bench/,
# and the import layers (import-linter, contracts in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
