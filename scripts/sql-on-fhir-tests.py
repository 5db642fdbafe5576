"""Run the SQL on FHIR v2 specification's own test cases through caremesh's ViewDefinition runner.

Reads `tests/*.json` of a local snapshot of github.com/FHIR/sql-on-fhir-v2: a git directory
(`--git-dir`, read with `git show HEAD:tests/<file>`) or a checkout (`--dir`). Nothing is
downloaded and nothing of the specification is committed. A test passes when its rows equal the
expected rows (as a multiset: the specification leaves row order open), when its columns are the
expected columns in order (`expectColumns`), or when it expects an error and the view is refused
or fails. Prints the pass count per file and in total; `--verbose` names the failures.

    .venv/bin/python scripts/sql-on-fhir-tests.py --git-dir /work/.mirror/FHIR+sql-on-fhir-v2/repo

Exit status: 0 when every test passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from caremesh.errors import ConfigurationError  # noqa: E402
from caremesh.research.sql_on_fhir import load_view, view_rows  # noqa: E402


def _suites(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    if args.dir:
        files = sorted(Path(args.dir, "tests").glob("*.json"))
        return [(f.name, json.loads(f.read_text())) for f in files]
    git = ["git", "--git-dir", args.git_dir]
    listing = subprocess.run(  # noqa: S603
        [*git, "ls-tree", "--name-only", "HEAD", "tests/"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    out = []
    for name in sorted(n for n in listing if n.endswith(".json")):
        text = subprocess.run(  # noqa: S603
            [*git, "show", f"HEAD:{name}"], capture_output=True, text=True, check=True
        ).stdout
        out.append((name.removeprefix("tests/"), json.loads(text)))
    return out


def _key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


def _run(test: dict[str, Any], resources: list[dict[str, Any]]) -> tuple[bool, str]:
    try:
        view = load_view(test["view"])
        rows = list(view_rows(view, iter(resources)))
    except ConfigurationError as exc:
        return bool(test.get("expectError")), str(exc)
    if test.get("expectError"):
        return False, "expected an error"
    if "expectColumns" in test:
        return view.column_names == test["expectColumns"], f"columns {view.column_names}"
    expected = sorted(_key(r) for r in test.get("expect", []))
    got = sorted(_key(r) for r in rows)
    return got == expected, f"rows {got}"


def main() -> int:
    """Run every test case and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--git-dir", default="/work/.mirror/FHIR+sql-on-fhir-v2/repo")
    parser.add_argument("--dir", help="a checkout of the specification repository instead")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    passed = total = 0
    for name, suite in _suites(args):
        ok = 0
        for test in suite["tests"]:
            good, detail = _run(test, suite["resources"])
            ok += good
            if not good and args.verbose:
                print(f"  FAIL {name}: {test['title']}: {detail[:300]}")
        print(f"{name}: {ok}/{len(suite['tests'])}")
        passed += ok
        total += len(suite["tests"])
    print(f"SQL on FHIR v2 tests: {passed}/{total} passed")
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
