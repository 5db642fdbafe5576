#!/usr/bin/env bash
# Install caremesh into PREFIX (pip's --prefix layout) with the pseudonymisation engine's hot
# modules compiled by mypyc into the installed package (`caremesh native build`), and fail
# unless the compiled engine is the one that runs. mypyc goes into a scratch prefix that is
# deleted at the end, so PREFIX holds only what runs. The Docker image's build stage runs this;
# it needs a C compiler and the Python headers, and an interpreter with no caremesh
# dependencies installed (pip skips what the running interpreter already has).
#
#   PYTHON=python3.11 scripts/install-prefix.sh /install
set -euo pipefail
prefix=${1:?usage: scripts/install-prefix.sh PREFIX}
prefix=$(mkdir -p "$prefix" && cd "$prefix" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
site_of() {
  "$PY" -c 'import sys, sysconfig; print(sysconfig.get_path("platlib", "posix_prefix", {"base": sys.argv[1], "platbase": sys.argv[1]}))' "$1"
}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# from a copy: setuptools leaves its build/ directory beside the sources it builds
mkdir "$scratch/source"
cp -r pyproject.toml README.md src "$scratch/source/"
"$PY" -m pip install --prefix="$prefix" "$scratch/source"
tools=$scratch/tools
mypy_pin=$("$PY" -c 'import tomllib
with open("pyproject.toml", "rb") as f:
    dev = tomllib.load(f)["project"]["optional-dependencies"]["dev"]
print(next(r for r in dev if r.split("=")[0].strip() == "mypy"))')
"$PY" -m pip install --prefix="$tools" "$mypy_pin"
site=$(site_of "$prefix")
PYTHONPATH="$site:$(site_of "$tools")" "$PY" -m caremesh.cli.main native build
PYTHONPATH="$site" "$PY" -m caremesh.cli.main native status
