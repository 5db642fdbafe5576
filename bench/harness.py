"""Benchmark plumbing: medians over repetitions, results table, JSON and markdown output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
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
        "kafka": "4.1.1 (deploy/kafka/pom.xml)",
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


def write(results: list[Result], settings: dict[str, Any], name: str = "results") -> str:
    """Write docs/bench/<name>.json and .md; return the markdown table."""
    DOCS.mkdir(parents=True, exist_ok=True)
    meta = machine()
    payload = {"machine": meta, "settings": settings, "results": [asdict(r) for r in results]}
    (DOCS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        f"Measured {meta['date']} on {meta['cpu']} ({meta['cpus']} cores), Python {meta['python']}, "
        f"{meta['java']}, Kafka {meta['kafka']}.",
        "",
        "| benchmark | measured | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.value:,.4g} {r.unit} | {r.baseline:,.4g} {r.unit} | {r.ratio:.2f} "
            f"| {r.target} | {'yes' if r.met else 'no'} |"
        )
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items())]
    table = "\n".join(lines) + "\n"
    (DOCS / f"{name}.md").write_text(table)
    return table
