#!/usr/bin/env bash
# The test command: bootstrap, static checks, the browser and HL7's example packages (fetched once,
# outside git), the local broker, the whole pytest suite.
# Starts the local broker unless one answers already, and stops it again if it started it.
# Extra arguments go to pytest. Exit code 5 from pytest (no test ran) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1
bash scripts/check.sh || exit 1
bash scripts/ensure-browser.sh || exit 1
bash scripts/fetch-fhir-examples.sh || exit 1

source scripts/lib/broker.sh
ensure_broker test

.venv/bin/caremesh topics create >/dev/null
# Two pytest processes (pytest-xdist): most tests wait on brokers, workers and timeouts rather
# than on a core, so two of them overlap well on a 2-core machine. Each file stays in one process
# (tests/conftest.py groups them). CAREMESH_TEST_PROCESSES=0 runs everything in this process.
.venv/bin/python -m pytest -n "${CAREMESH_TEST_PROCESSES:-2}" --dist loadgroup "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "test: pytest collected no tests; that is a failure" >&2
  rc=1
fi
exit "$rc"
