#!/usr/bin/env bash
# Make sure Debian's headless Chromium is installed for the browser (e2e) tests.
# Installs nothing when /usr/bin/chromium is already there; otherwise apt-get installs it
# (CI runs as root). Playwright for Python drives this binary through `executable_path`;
# `playwright install` is never run (its browser downloads are not reachable).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "ensure-browser: $(chromium --version 2>/dev/null || echo chromium) already installed"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-browser: chromium is missing and installing it needs root (apt-get install chromium)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
echo "ensure-browser: installed $(chromium --version 2>/dev/null || echo chromium)"
