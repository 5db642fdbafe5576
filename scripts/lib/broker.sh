# Sourced by the test and bench commands: `ensure_broker` starts the local broker unless one
# answers already, and stops it again when the calling script exits if it started it.
ensure_broker() {
  _broker_started=0
  if ! .venv/bin/caremesh kafka status >/dev/null 2>&1; then
    .venv/bin/caremesh kafka up || { echo "$1: the local broker did not start" >&2; exit 1; }
    _broker_started=1
  fi
  trap _stop_broker EXIT INT TERM
}

_stop_broker() { if [ "${_broker_started:-0}" = 1 ]; then .venv/bin/caremesh kafka down || true; fi; }
