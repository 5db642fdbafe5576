"""Pseudonymisation: CPU per ~1 KB resource under gdpr-research against a plain JSON copy of it.

The floor is `orjson.loads(orjson.dumps(resource))`: the cheapest way to produce an independent
copy of a resource, which any per-resource transform has to do at least. (`copy.deepcopy` is
slower, about 5x on this corpus, so measuring against it would flatter the engine; its figure
is reported for context.) Both sides take the same parsed dicts (the bench corpus: Patient,
Observation and Encounter of 0.7-0.9 KB) and produce a new dict; the anonymizer is the one the
research stage builds for a study (`study_anonymizer`, HKDF-derived keys, patient-scoped date
shift, pseudonyms), built once outside the measurement. Target: <= 4x.

The engine runs in the form the research stage runs it in: compiled by mypyc when a fresh build
is there (`caremesh native build`, done by bootstrap), otherwise pure Python; the row says which.
The other form is measured the same way in a child process and reported for context.

    python -c "from bench import pseudonymise; print(pseudonymise.run(3))"
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import date
from functools import partial
from typing import Any

import orjson

from bench import corpus
from bench.harness import Result, cpu_seconds
from caremesh.pseudonym import load_preset, native, study_anonymizer

RESOURCES = 3000
BATCH = 150
TARGET = 4.0
_MASTER = bytes(range(32))  # synthetic: the benchmark derives keys, it protects nothing


def _corpus(count: int) -> list[tuple[dict[str, Any], str]]:
    """(resource, patient key) pairs: each patient's Patient, Observation and Encounter."""
    out = []
    for n in range(count):
        i = n // 3
        out.append((corpus.resource(i, n), f"29901750{i:07d}"))
    return out


def _interleaved(
    items: list[tuple[dict[str, Any], str]], sides: list[Callable[[dict[str, Any], str], Any]]
) -> list[list[float]]:
    """CPU seconds of each side on the same batches, alternating batch by batch, so that the
    load other processes put on the shared cores falls on both sides alike."""
    out: list[list[float]] = [[] for _ in sides]
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        for n, side in enumerate(sides):
            out[n].append(cpu_seconds(partial(_each, side, batch)))
    return out


def _each(
    side: Callable[[dict[str, Any], str], Any], batch: list[tuple[dict[str, Any], str]]
) -> list[Any]:
    """One side's work on one batch."""
    return [side(r, k) for r, k in batch]


def ratios(repetitions: int, resources: int = RESOURCES) -> dict[str, Any]:
    """Engine, orjson-copy and deepcopy CPU per resource (us) and the engine's two ratios, for
    the engine form this process runs.

    Each repetition walks the corpus in batches, timing the three sides on each batch in turn;
    the ratio is the median of the per-batch ratios, the values the medians of the per-batch
    costs."""
    items = _corpus(resources)
    anonymizer = study_anonymizer(
        "bench", _MASTER, load_preset("gdpr-research"), today=date(2026, 1, 15)
    )
    sides: list[Callable[[dict[str, Any], str], Any]] = [
        lambda r, k: anonymizer.apply(r, patient_key=k),
        lambda r, _k: orjson.loads(orjson.dumps(r)),
        lambda r, _k: copy.deepcopy(r),
    ]
    for resource, key in items:  # warm: compiled paths, memoized hashes, as in a running stage
        anonymizer.apply(resource, patient_key=key)
    engine: list[float] = []
    floor: list[float] = []
    deep: list[float] = []
    for _ in range(repetitions):
        e, f, d = _interleaved(items, sides)
        engine += e
        floor += f
        deep += d
    per = 1e6 / BATCH
    return {
        "engine": statistics.median(engine) * per,
        "floor": statistics.median(floor) * per,
        "deep": statistics.median(deep) * per,
        "to_floor": statistics.median(a / b for a, b in zip(engine, floor, strict=True)),
        "to_deep": statistics.median(a / b for a, b in zip(engine, deep, strict=True)),
        "samples": [a / b for a, b in zip(engine, floor, strict=True)],
    }


def _other_form(repetitions: int, resources: int, compiled: bool) -> dict[str, Any] | None:
    """`ratios` in a child process running the other engine form (None if it cannot)."""
    env = {**os.environ, "CAREMESH_NATIVE": "0" if compiled else "1"}
    code = (
        "import json, sys; from bench import pseudonymise; from caremesh.pseudonym import native; "
        f"r = pseudonymise.ratios({repetitions}, {resources}); "
        "r['active'] = native.status().active; json.dump(r, sys.stdout)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None
    found: dict[str, Any] = json.loads(done.stdout)
    return found if bool(found["active"]) != compiled else None


def run(repetitions: int, resources: int = RESOURCES) -> list[dict[str, Any]]:
    """CPU per resource of the gdpr-research anonymizer vs an orjson copy (target <= 4x), the
    deepcopy figure, and the other engine form's figure (compiled or pure Python) for context;
    rows shaped like `bench.harness.Result` (as dicts)."""
    compiled = native.status().active
    form = "compiled (mypyc)" if compiled else f"pure Python: {native.status().reason}"
    mine = ratios(repetitions, resources)
    to_floor, cost = mine["to_floor"], mine["engine"]
    notes = (
        f"engine {form}; {resources} resources of 0.7-0.9 KB x {repetitions}, batches of "
        f"{BATCH}; floor = orjson.loads(orjson.dumps(r)); ratio = median of per-batch ratios"
    )
    rows = [
        Result(
            "pseudonymise: gdpr-research CPU vs JSON copy (orjson)",
            cost,
            mine["floor"],
            "us/resource",
            to_floor,
            f"<= {TARGET:g}",
            to_floor <= TARGET,
            notes,
            mine["samples"],
        ),
        Result(
            "pseudonymise: gdpr-research CPU vs copy.deepcopy (context)",
            cost,
            mine["deep"],
            "us/resource",
            mine["to_deep"],
            "(reported)",
            True,
            "deepcopy is a slower floor than orjson: reported, not a target",
        ),
    ]
    other = _other_form(repetitions, resources, compiled)
    if other is not None:
        rows.append(
            Result(
                "pseudonymise: the "
                + ("pure Python" if compiled else "compiled")
                + " engine vs JSON copy (context)",
                other["engine"],
                other["floor"],
                "us/resource",
                other["to_floor"],
                "(reported)",
                True,
                "the same measurement in a child process with CAREMESH_NATIVE="
                + ("0" if compiled else "1"),
            )
        )
    return [asdict(r) for r in rows]


if __name__ == "__main__":
    for row in run(3):
        print(
            f"{row['name']}: {row['value']:.1f} vs {row['baseline']:.1f} {row['unit']}"
            f" -> {row['ratio']:.2f} (target {row['target']})"
        )
