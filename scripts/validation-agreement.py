"""Does caremesh refuse at ingest what HAPI FHIR's validator refuses? Counts on a corpus.

Starts the local HAPI FHIR R4 server (caremesh.local.hapi, built once by Maven), judges HL7's official
R4 examples (hl7.fhir.r4.examples@4.0.1, fetched with `npm pack` into
`$CAREMESH_EXAMPLES_CACHE`, default ~/.cache/caremesh/fhir-examples, never committed) and
hostile variants of the examples of the types caremesh carries, by HAPI's `$validate` and by
caremesh's ingest validation, and prints the four cells for each part of the corpus.

    .venv/bin/python scripts/validation-agreement.py [--all-types] [--verbose]

`--verbose` lists the resources of the dangerous cell (HAPI refuses, caremesh accepts) with
HAPI's element paths; it never prints resource content.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from caremesh.local.hapi import LocalHapi, down  # noqa: E402
from tests.support.agreement import (  # noqa: E402
    CARRIED,
    CELLS,
    examples,
    hostile_variants,
    judge,
    table,
)
from tests.support.kafka import free_port  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--all-types", action="store_true", help="every example, not only carried types"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    carried = examples(CARRIED)
    parts = {
        "examples of carried types": carried,
        "hostile variants": hostile_variants(carried),
    }
    if args.all_types:
        parts["examples of other types"] = {k: v for k, v in examples().items() if k not in carried}
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalHapi().up(free_port(), "R4", log_path=Path(tmp) / "hapi.log")
        try:
            with httpx.Client(timeout=120) as client:
                for title, corpus in parts.items():
                    verdicts = list(judge(client, server.base_url, corpus))
                    counts = table(verdicts)
                    print(f"{title} ({len(verdicts)})")
                    for cell in CELLS:
                        print(f"  {cell:<34} {counts[cell]:>5}")
                    if args.verbose:
                        for v in verdicts:
                            if v.cell != CELLS[0] and v.cell != CELLS[1]:
                                print(
                                    f"    {v.cell}: {v.name}: {', '.join(v.hapi[:3]) or v.caremesh}"
                                )
        finally:
            down(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
