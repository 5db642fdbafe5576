"""Benchmark plumbing: medians over repetitions, results table, JSON and markdown output."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bench"


@dataclass
class Result:
    """One measured ratio: a measurement against its baseline, with the target it must meet."""

    name: str
    value: float
    baseline: float
    unit: str
    ratio: float
    target: str
    met: bool
    notes: str = ""
    samples: list[float] = field(default_factory=list)


def median_of(repetitions: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    """Run `measure` `repetitions` times; the median and the samples."""
    samples = [measure() for _ in range(repetitions)]
    return statistics.median(samples), samples


def median_pair(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """The (value, baseline) pair, of pairs measured one after the other, whose ratio is the
    median of their ratios (the lower middle one of an even count). A change of the machine's
    speed during a section moves both sides of a pair; medians of each side taken apart would
    compare values measured minutes apart."""
    ordered = sorted(pairs, key=lambda p: p[0] / p[1] if p[1] > 0 else 0.0)
    return ordered[(len(ordered) - 1) // 2]


def cpu_seconds(fn: Callable[[], Any]) -> float:
    """Process CPU time of one call."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def machine() -> dict[str, Any]:
    """Where and with what the benchmarks ran."""

    def version(module: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(module)
        except Exception:
            return "?"

    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "java": java.splitlines()[0] if java else "?",
        "kafka": "4.1.1 (src/caremesh/kafka/broker/pom.xml)",
        "versions": {
            m: version(m)
            for m in (
                "faust-streaming",
                "aiokafka",
                "confluent-kafka",
                "fhir.resources",
                "orjson",
                "pydantic",
            )
        },
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def render(results: list[Result], meta: dict[str, Any], settings: dict[str, Any]) -> str:
    """The markdown table with its header (date, machine, versions, load) and settings."""
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    lines = [
        f"Measured {meta['date']} on {meta['cpu']} ({meta['cpus']} cores), Python {meta['python']}, "
        f"{meta['java']}, Kafka {meta['kafka']}; {versions}. "
        f"Load average (1/5/15 min) {meta.get('load_before', '?')} before, "
        f"{meta.get('load_after', '?')} after (other work shares this machine).",
        "",
        "| benchmark | measured | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.value:,.4g} {r.unit} | {r.baseline:,.4g} {r.unit} | {r.ratio:.2f} "
            f"| {r.target} | {'yes' if r.met else '**no**'} |"
        )
    notes = [f"- {r.name}: {r.notes}" for r in results if r.notes]
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items())]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def write(
    results: list[Result],
    settings: dict[str, Any],
    name: str = "results",
    meta: dict[str, Any] | None = None,
) -> str:
    """Write docs/bench/<name>.json and .md; return the markdown table."""
    DOCS.mkdir(parents=True, exist_ok=True)
    meta = meta if meta is not None else machine()
    meta.setdefault("load_after", load_note())
    payload = {"machine": meta, "settings": settings, "results": [asdict(r) for r in results]}
    (DOCS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    table = render(results, meta, settings)
    (DOCS / f"{name}.md").write_text(table)
    return table


README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def splice_readme(readme: str, table: str) -> str:
    """`readme` with the text between the bench markers replaced by `table` (unchanged when the
    markers are missing)."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        return readme
    return readme[: start + len(README_START)] + "\n\n" + table + "\n" + readme[end:]


def ratio_result(
    name: str,
    value: float,
    baseline: float,
    unit: str,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    notes: str = "",
    samples: list[float] | None = None,
) -> Result:
    """A Result whose ratio is value/baseline, checked against an upper or lower bound (or
    neither: a figure reported for context)."""
    ratio = value / baseline if baseline > 0 else 0.0
    if at_most is not None:
        target, met = f"<= {at_most:g}", baseline > 0 and ratio <= at_most
    elif at_least is not None:
        target, met = f">= {at_least:g}", baseline > 0 and ratio >= at_least
    else:
        target, met = "(reported)", True
    return Result(name, value, baseline, unit, ratio, target, met, notes, list(samples or []))


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of a non-empty list."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def load_note() -> str:
    """The 1/5/15-minute load averages, for the results header (other work shares the cores)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def run_prefix() -> str:
    """A topic prefix of its own for one benchmark run on the shared broker."""
    return f"bench.{uuid.uuid4().hex[:8]}."


def delete_topics(bootstrap: str, prefix: str) -> int:
    """Delete every topic (and consumer group) whose name starts with `prefix`; how many topics."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]
    for future in admin.delete_topics(names, operation_timeout=60).values() if names else ():
        with contextlib.suppress(Exception):
            future.result(60)
    try:
        groups = [
            g.group_id
            for g in admin.list_consumer_groups().result(30).valid
            if g.group_id.startswith(prefix)
        ]
        if groups:
            for future in admin.delete_consumer_groups(groups).values():
                future.exception(30)
    except Exception:
        pass
    return len(names)
