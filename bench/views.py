"""SQL on FHIR views: CPU per study record of flattening it through the shipped views, against
reading the same record raw.

The floor is `orjson.loads` of the record's bytes, what an export or a follower does at least
for every record of the topic. The measured side parses the record the same way and runs it
through the six shipped views (caremesh/research/views), each resource giving rows only in the
view of its type, as `caremesh research export --view ...` does between reading and writing.
Both sides take the same records (the bench corpus: Patient, Observation and Encounter),
alternating batch by batch. Reported, no target: the rows per second are what a researcher's
export can reach on one core.

    python -m bench --only views
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from functools import partial
from typing import Any

import orjson

from bench import corpus
from bench.harness import Result, cpu_seconds
from caremesh.research.sql_on_fhir import find_view, shipped_views, view_runner

RECORDS = 1500
BATCH = 150


def _flatten(runners: list[Any], batch: list[bytes]) -> int:
    rows = 0
    for value in batch:
        resource = orjson.loads(value)
        for run in runners:
            rows += len(run(resource))
    return rows


def _raw(batch: list[bytes]) -> int:
    return sum(len(orjson.loads(value)) for value in batch)


def run(repetitions: int, records: int = RECORDS) -> list[dict[str, Any]]:
    """`results` as dicts."""
    return [asdict(r) for r in results(repetitions, records)]


def results(repetitions: int, records: int = RECORDS) -> list[Result]:
    """CPU per record of the shipped views against a raw parse: one reported row
    (`python -m bench --only views`)."""
    values = [orjson.dumps(corpus.resource(n // 3, n)) for n in range(records)]
    runners = [view_runner(find_view(name)) for name in shipped_views()]
    rows_per_record = _flatten(runners, values) / records
    views_cost: list[float] = []
    raw_cost: list[float] = []
    for _ in range(repetitions):
        for start in range(0, records, BATCH):
            batch = values[start : start + BATCH]
            views_cost.append(cpu_seconds(partial(_flatten, runners, batch)))
            raw_cost.append(cpu_seconds(partial(_raw, batch)))
    ratios = [a / b for a, b in zip(views_cost, raw_cost, strict=True) if b > 0]
    per_record = statistics.median(views_cost) / BATCH
    result = Result(
        name="research export --view: CPU per record, shipped views vs raw read",
        value=per_record * 1e6,
        baseline=statistics.median(raw_cost) / BATCH * 1e6,
        unit="us/record",
        ratio=statistics.median(ratios),
        target="report",
        met=True,
        notes=(
            f"{records} records x {repetitions}, {len(runners)} views, "
            f"{rows_per_record:.2f} rows per record; about {1 / per_record:,.0f} records/s "
            "on one core; floor = orjson.loads"
        ),
        samples=ratios,
    )
    return [result]
