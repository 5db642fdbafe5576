#!/usr/bin/env bash
# Fetch HL7's official FHIR example packages (npm: hl7.fhir.r4.examples, hl7.fhir.r5.examples)
# once into a cache outside git ($CAREMESH_EXAMPLES_CACHE, default ~/.cache/caremesh/fhir-examples),
# so the tests that read them download nothing while they run. Nothing fetched is committed.
set -euo pipefail
cache=${CAREMESH_EXAMPLES_CACHE:-$HOME/.cache/caremesh/fhir-examples}
mkdir -p "$cache"
for package in hl7.fhir.r4.examples@4.0.1 hl7.fhir.r5.examples@5.0.0; do
  tgz="$cache/${package%@*}-${package#*@}.tgz"
  if [ -s "$tgz" ]; then
    continue
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "fetch-fhir-examples: npm is needed to fetch $package" >&2
    exit 1
  fi
  (cd "$cache" && npm pack --silent "$package" >/dev/null) || {
    echo "fetch-fhir-examples: npm pack $package failed" >&2
    exit 1
  }
  echo "fetch-fhir-examples: $package in $cache"
done
