#!/usr/bin/env python3
"""Run the upstream anonymizer's functional test pairs through `caremesh pseudonymise`.

    python scripts/anonymizer-compat.py PATH-TO-FHIR-Tools-for-Anonymization [--verbose]

PATH is a local copy of github.com/microsoft/FHIR-Tools-for-Anonymization (a checkout, or the
files exported from a snapshot); nothing of it is copied into this repository. The cases are
those of its functional tests (Shared.FunctionalTests: ResourceTests, CollectionResourceTests;
R4.FunctionalTests: VersionSpecificTests): each (rule file, input, expected output) pair runs
through the CLI in `--keys rule-file` mode, and the output is compared with the expected one as
JSON values (object key order ignored, as upstream's test normalises through its serializer).
The cases where upstream expects an error (STU3-only resources and fields under the R4 sample
configuration) pass when the CLI rejects the record. Prints one line per failing case and the
pass count; exits 0 when every case passes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SHARED = "src/Microsoft.Health.Fhir.Anonymizer.Shared.FunctionalTests"
R4 = "src/Microsoft.Health.Fhir.Anonymizer.R4.FunctionalTests"

PAIRS: list[tuple[str, str, str]] = [
    # ResourceTests
    ("common-config.json", "patient-basic.json", "patient-basic-target.json"),
    ("redact-all-config.json", "patient-basic.json", "patient-redact-all-target.json"),
    ("common-config.json", "patient-special-content.json", "patient-special-content-target.json"),
    ("common-config.json", "patient-null-date.json", "patient-null-date-target.json"),
    ("common-no-partial-config.json", "patient-no-partial.json", "patient-no-partial-target.json"),
    (
        "substitute-primitive.json",
        "patient-substitute-primitive.json",
        "patient-substitute-primitive-target.json",
    ),
    (
        "substitute-complex.json",
        "patient-substitute-complex.json",
        "patient-substitute-complex-target.json",
    ),
    (
        "substitute-conflict-rules.json",
        "patient-substitute-conflict-rules.json",
        "patient-substitute-conflict-rules-target.json",
    ),
    (
        "generalize-patient-config.json",
        "patient-generalize.json",
        "patient-generalize-target.json",
    ),
    (
        "substitute-multiple.json",
        "patient-substitute-multiple.json",
        "patient-substitute-multiple-target.json",
    ),
    (
        "substitute-multiple-2.json",
        "patient-substitute-multiple-2.json",
        "patient-substitute-multiple-2-target.json",
    ),
    # CollectionResourceTests
    ("common-config.json", "contained-basic.json", "contained-basic-target.json"),
    ("common-config.json", "bundle-basic.json", "bundle-basic-target.json"),
    ("common-config.json", "contained-in-bundle.json", "contained-in-bundle-target.json"),
    ("redact-all-config.json", "contained-basic.json", "contained-redact-all-target.json"),
    ("redact-all-config.json", "bundle-basic.json", "bundle-redact-all-target.json"),
    (
        "redact-all-config.json",
        "contained-in-bundle.json",
        "contained-in-bundle-redact-all-target.json",
    ),
    ("substitute-multiple.json", "contained-substitute.json", "contained-substitute-target.json"),
    ("substitute-multiple.json", "bundle-substitute.json", "bundle-substitute-target.json"),
    # shipped with the tests, not referenced by a test method: run with the common rules
    (
        "common-config.json",
        "bundle-without-entry-resource.json",
        "bundle-without-entry-resource-target.json",
    ),
]

R4_PAIRS: list[tuple[str, str]] = [
    ("OrganizationAffiliation.json", "OrganizationAffiliation-target.json"),
    ("MedicinalProduct.json", "MedicinalProduct-target.json"),
    ("ServiceRequest.json", "ServiceRequest-target.json"),
    ("Claim-R4.json", "Claim-R4-target.json"),
    ("Account-R4.json", "Account-R4-target.json"),
    ("Contract-R4.json", "Contract-R4-target.json"),
]

STU3_ERRORS: list[str] = [
    "DeviceComponent.json",
    "ProcessRequest.json",
    "ProcessResponse.json",
    "Claim-Stu3.json",
    "Account-Stu3.json",
    "Contract-Stu3.json",
]


_UTC = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?:Z|\+00:00)$")


def _standard(value: Any) -> Any:
    """Upstream's tests compare after a parse and serialize round trip, which writes an
    instant's `Z` as `+00:00`; the same equivalence is applied to both sides here."""
    if isinstance(value, dict):
        return {k: _standard(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_standard(v) for v in value]
    if isinstance(value, str):
        match = _UTC.match(value)
        return f"{match.group(1)}+00:00" if match else value
    return value


def _load(path: Path) -> Any:
    return _standard(json.loads(path.read_text(encoding="utf-8-sig")))


def _caremesh() -> list[str]:
    here = Path(sys.executable).parent / "caremesh"
    return [str(here)] if here.exists() else [sys.executable, "-m", "caremesh.cli.main"]


def _run(config: Path, source: Path, work: Path) -> tuple[int, Any, str]:
    out = work / "out.json"
    out.unlink(missing_ok=True)
    done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [
            *_caremesh(),
            "pseudonymise",
            "--config",
            str(config),
            "--keys",
            "rule-file",
            "--quiet",
            str(source),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CAREMESH_LOG_LEVEL": "WARNING"},
    )
    result = _load(out) if out.exists() else None
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, result, lines[-1] if lines else ""


def main() -> int:
    """Run every case; print failures and the pass count."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream", type=Path, help="local copy of FHIR-Tools-for-Anonymization")
    parser.add_argument("--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    shared, r4 = args.upstream / SHARED, args.upstream / R4
    if not shared.is_dir() or not r4.is_dir():
        print(f"{args.upstream}: not a copy of FHIR-Tools-for-Anonymization ({SHARED} missing)")
        return 2
    cases: list[tuple[str, Path, Path, Path | None]] = [
        (
            f"{c} {i}",
            shared / "Configurations" / c,
            shared / "TestResources" / i,
            shared / "TestResources" / t,
        )
        for c, i, t in PAIRS
    ]
    sample = r4 / "r4-configuration-sample.json"
    cases += [
        (
            f"r4-sample {i}",
            sample,
            shared / "TestResources/R4OnlyResource" / i,
            shared / "TestResources/R4OnlyResource" / t,
        )
        for i, t in R4_PAIRS
    ]
    cases += [
        (
            f"r4-sample {i} (error expected)",
            sample,
            shared / "TestResources/Stu3OnlyResource" / i,
            None,
        )
        for i in STU3_ERRORS
    ]
    passed = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, config, source, target in cases:
            code, result, last = _run(config, source, work)
            if target is None:
                ok = code == 4 and result is None
                why = f"exit {code}, expected a rejected record (exit 4)"
            else:
                ok = code == 0 and result == _load(target)
                why = f"exit {code}: {last}" if code else "output differs"
            passed += ok
            if not ok or args.verbose:
                print(f"{'pass' if ok else 'FAIL'}: {name}" + ("" if ok else f" ({why})"))
    print(f"upstream functional test pairs: {passed}/{len(cases)} pass")
    return 0 if passed == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
