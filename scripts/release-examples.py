#!/usr/bin/env python3
"""Convert HL7's official examples of the carried types R4→R5 and R5→R4 and count the outcomes.

The examples come from the npm packages hl7.fhir.r4.examples@4.0.1 and hl7.fhir.r5.examples@5.0.0,
fetched once into a cache outside the repository (never by the tests):

    mkdir -p ~/.cache/caremesh/fhir-examples && cd ~/.cache/caremesh/fhir-examples
    npm pack hl7.fhir.r4.examples@4.0.1 hl7.fhir.r5.examples@5.0.0
    for v in r4 r5; do mkdir -p $v && tar -xzf hl7.fhir.$v.examples-*.tgz -C $v; done

Usage: `.venv/bin/python scripts/release-examples.py [CACHE_DIR]`. For each example whose type
is carried and that validates in its own release (fhir.resources), it prints how many convert to
a resource that validates in the target release (`convert` validates every result), how many
are refused as Unconvertible (by reason code), and how many come back unchanged when converted
back (round trip).
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson

from caremesh.fhir.releases import CARRIED, FAMILY, Unconvertible, convert, validation_problem
from caremesh.fhir.validate import Release

DEFAULT_CACHE = Path.home() / ".cache" / "caremesh" / "fhir-examples"


def _examples(folder: Path) -> list[dict[str, Any]]:
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("resourceType") in CARRIED:
            found.append(data)
    return found


def run(folder: Path, source: Release, target: Release) -> None:
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    for example in _examples(folder):
        rtype = str(example["resourceType"])
        row = rows[rtype]
        if validation_problem(example, FAMILY[source]) is not None:
            row["invalid-source"] += 1
            continue
        row["examples"] += 1
        out = convert(example, source, target)
        if isinstance(out, Unconvertible):
            row["unconvertible"] += 1
            reasons[f"{out.reason_code} {out.element}"] += 1
            continue
        row["valid-target"] += 1  # convert validated it with the target release's models
        back = convert(out, target, source)
        if not isinstance(back, Unconvertible) and back == example:
            row["round-trip"] += 1
    print(f"\n## {source} → {target} ({folder})\n")
    print("| type | examples | valid in target | unconvertible | round trip | invalid in source |")
    print("|---|---|---|---|---|---|")
    total: Counter[str] = Counter()
    for rtype in sorted(rows):
        row = rows[rtype]
        total.update(row)
        print(
            f"| {rtype} | {row['examples']} | {row['valid-target']} | {row['unconvertible']} "
            f"| {row['round-trip']} | {row['invalid-source']} |"
        )
    print(
        f"| **all** | {total['examples']} | {total['valid-target']} | {total['unconvertible']} "
        f"| {total['round-trip']} | {total['invalid-source']} |"
    )
    print("\nreasons (code element: count):")
    for reason, count in reasons.most_common():
        print(f"  {reason}: {count}")


def main(argv: list[str]) -> int:
    cache = Path(argv[1]) if len(argv) > 1 else DEFAULT_CACHE
    r4, r5 = cache / "r4" / "package", cache / "r5" / "package"
    if not r4.is_dir() or not r5.is_dir():
        print(f"examples not found under {cache}: see this script's docstring", file=sys.stderr)
        return 2
    run(r4, "R4", "R5")
    run(r5, "R5", "R4")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
