"""Per-stage CPU per message against its floor: validation vs an orjson parse (<= 75x), the
validate stage's full per-message function vs validation alone (<= 1.25x), pseudonymisation vs a
JSON copy (<= 4x, `bench/pseudonymise.py`)."""

from __future__ import annotations

import importlib
from dataclasses import fields
from typing import Any

import orjson

from bench.harness import Result, cpu_seconds, ratio_result
from bench.ingest import cpu_ratio, validation_alone


def parse_only(messages: list[bytes]) -> None:
    """The floor of validation: parse each message with orjson."""
    for value in messages:
        orjson.loads(value)


FLOOR_ROUNDS = 10
"""The orjson floor is timed over this many passes of the messages: one pass is ~20 ms of CPU,
short enough for a cache or a neighbour's burst to move it by half (10 to 20 us/msg)."""


def validation_vs_parse(messages: list[bytes], repetitions: int) -> Result:
    """fhir.resources validation vs orjson parse, CPU per message (target <= 75x).

    Each repetition times validation, then the floor right after it, so a change of machine load
    moves both; the ratio is the median of the repetitions' ratios."""
    validation_alone(messages[:100])  # warm-up: model classes built
    parse_only(messages)
    pairs = []
    for _ in range(repetitions):
        valid = cpu_seconds(lambda: validation_alone(messages))
        floor = cpu_seconds(lambda: _parse_rounds(messages))
        pairs.append((valid, floor / FLOOR_ROUNDS))
    pairs.sort(key=lambda pair: pair[0] / pair[1])
    valid, floor = pairs[(len(pairs) - 1) // 2]
    per = 1e6 / len(messages)
    return ratio_result(
        "validate: fhir.resources validation CPU vs orjson parse",
        valid * per,
        floor * per,
        "us/msg",
        at_most=75,
        notes=f"each repetition: validation, then the orjson parse of the same messages "
        f"{FLOOR_ROUNDS} times over; ratio = median of the repetitions' ratios",
        samples=[v * per for v, _ in pairs],
    )


def as_result(row: dict[str, Any]) -> Result:
    """A Result from a dict shaped like one (extra keys ignored)."""
    names = {f.name for f in fields(Result)}
    return Result(**{k: v for k, v in row.items() if k in names})


def pseudonymisation(repetitions: int) -> list[Result]:
    """The pseudonymisation rows of `bench.pseudonymise.run`, or one row saying it is missing.

    Hook: `bench/pseudonymise.py` must define `run(repetitions) -> list[dict]` whose dicts
    carry `bench.harness.Result`'s fields.
    """
    try:
        module = importlib.import_module("bench.pseudonymise")
    except ImportError:
        return [
            Result(
                "pseudonymise: CPU vs JSON copy",
                0.0,
                0.0,
                "us/resource",
                0.0,
                "<= 4",
                False,
                "bench/pseudonymise.py missing: no figure",
            )
        ]
    return [as_result(row) for row in module.run(repetitions)]


def results(messages: list[bytes], repetitions: int) -> list[Result]:
    """Every per-stage CPU ratio."""
    return [
        validation_vs_parse(messages, repetitions),
        cpu_ratio(messages, repetitions),
        *pseudonymisation(repetitions),
    ]


def _parse_rounds(messages: list[bytes]) -> None:
    """The floor's work: `parse_only` over the messages `FLOOR_ROUNDS` times."""
    for _ in range(FLOOR_ROUNDS):
        parse_only(messages)
