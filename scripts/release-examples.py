#!/usr/bin/env python3
"""Convert HL7's official examples of the carried types R4→R5 and R5→R4 and count the outcomes.

The examples come from the npm packages hl7.fhir.r4.examples@4.0.1 and hl7.fhir.r5.examples@5.0.0,
fetched once into a cache outside the repository (never by the tests):

    mkdir -p ~/.cache/caremesh/fhir-examples && cd ~/.cache/caremesh/fhir-examples
    npm pack hl7.fhir.r4.examples@4.0.1 hl7.fhir.r5.examples@5.0.0
    for v in r4 r5; do mkdir -p $v && tar -xzf hl7.fhir.$v.examples-*.tgz -C $v; done

Usage: `.venv/bin/python scripts/release-examples.py [--hapi] [CACHE_DIR]`. For each example
whose type is carried and that validates in its own release (fhir.resources), it prints how many
convert to a resource that validates in the target release (`convert` validates every result),
how many are refused as Unconvertible (by reason code), and how many come back unchanged when
converted back (round trip). With `--hapi` it also starts the local HAPI FHIR servers
(caremesh.local.hapi, R4 and R5) and counts the converted examples HAPI's validator finds no error in.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
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


Validator = Callable[[dict[str, Any]], list[str]]


@contextlib.contextmanager
def hapi_validators() -> Iterator[dict[str, Validator]]:
    """HAPI's $validate on a local R4 and a local R5 server, stopped on exit."""
    from caremesh.local.hapi import LocalHapi, down  # noqa: PLC0415 - only with --hapi

    servers = []
    try:
        with httpx.Client(timeout=120) as client:
            validators: dict[str, Validator] = {}
            for release in ("R4", "R5"):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                server = LocalHapi().up(port, release)
                servers.append(server)
                validators[release] = _validator(client, server.base_url)
            yield validators
    finally:
        for server in servers:
            down(server)


def _validator(client: httpx.Client, base: str) -> Validator:
    def validate(resource: dict[str, Any]) -> list[str]:
        response = client.post(f"{base}/{resource['resourceType']}/$validate", json=resource)
        issues = response.json().get("issue", [])
        return [
            f"{(i.get('expression') or ['?'])[0]}: {i.get('diagnostics', '')[:160]}"
            for i in issues
            if i.get("severity") in ("error", "fatal")
        ]

    return validate


def run(folder: Path, source: Release, target: Release, hapi: Validator | None = None) -> None:
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    hapi_errors: Counter[str] = Counter()
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
        if hapi is not None:
            found = hapi(out)
            if found:
                hapi_errors.update(e.split(":")[0] for e in found)
            else:
                row["hapi-valid"] += 1
        back = convert(out, target, source)
        if not isinstance(back, Unconvertible) and back == example:
            row["round-trip"] += 1
    print(f"\n## {source} → {target} ({folder})\n")
    print(
        "| type | examples | valid in target | HAPI valid | unconvertible | round trip "
        "| invalid in source |"
    )
    print("|---|---|---|---|---|---|---|")
    total: Counter[str] = Counter()
    for rtype in sorted(rows):
        row = rows[rtype]
        total.update(row)
        print(_row(rtype, row, hapi is not None))
    print(_row("**all**", total, hapi is not None))
    print("\nreasons (code element: count):")
    for reason, count in reasons.most_common():
        print(f"  {reason}: {count}")
    if hapi_errors:
        print("\nHAPI errors (element: count):")
        for where, count in hapi_errors.most_common():
            print(f"  {where}: {count}")


def _row(name: str, row: Counter[str], with_hapi: bool) -> str:
    hapi = str(row["hapi-valid"]) if with_hapi else "-"
    return (
        f"| {name} | {row['examples']} | {row['valid-target']} | {hapi} | {row['unconvertible']} "
        f"| {row['round-trip']} | {row['invalid-source']} |"
    )


def main(argv: list[str]) -> int:
    args = [a for a in argv[1:] if a != "--hapi"]
    cache = Path(args[0]) if args else DEFAULT_CACHE
    r4, r5 = cache / "r4" / "package", cache / "r5" / "package"
    if not r4.is_dir() or not r5.is_dir():
        print(f"examples not found under {cache}: see this script's docstring", file=sys.stderr)
        return 2
    if "--hapi" not in argv:
        run(r4, "R4", "R5")
        run(r5, "R5", "R4")
        return 0
    with hapi_validators() as hapi:
        run(r4, "R4", "R5", hapi["R5"])
        run(r5, "R5", "R4", hapi["R4"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
