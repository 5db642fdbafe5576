"""`python -m bench [--quick]`: every benchmark of issue 8 in one run on the local broker.

Raw baselines (Kafka's perf tools, confluent-kafka and aiokafka loops), the stream runtimes
passing raw records through (Faust, the batch runner, quixstreams), per-stage CPU against its
floor, end to end with 1 and 2 workers, latency at half the measured maximum rate (and,
reported, under a light load), and a backlog drained after the workers were stopped.
Each figure is a median over `--repetitions` runs (3; the latency section's light-load rows,
reported, run once) against a baseline measured in the same run. Writes
docs/bench/results.{json,md} and the README's quoted table; the benchmark's topics live under a
prefix of their own and are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import corpus, delivery, pipeline, raw, stages, views
from bench.harness import (
    Result,
    delete_topics,
    load_note,
    machine,
    run_prefix,
    splice_readme,
    write,
)
from bench.latency import LIGHT_RATE, latency_result
from caremesh.kafka.admin import reachable

README = Path(__file__).resolve().parents[1] / "README.md"
SECTIONS = ("raw", "cpu", "e2e", "latency", "backlog", "delivery", "views")
BROKER_FREE = frozenset({"cpu", "views"})
"""Sections that run without a Kafka broker."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes for a fast check")
    parser.add_argument("--repetitions", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--singles", type=int, help="single-resource messages (default 1000)")
    parser.add_argument("--bundles", type=int, help="Bundles of 20 (default 100)")
    parser.add_argument(
        "--e2e-scale",
        type=int,
        help="the e2e workload is this many times the cpu section's messages (default 5, 1 with "
        "--quick): a run of a few seconds measures the workers' start more than their rate",
    )
    parser.add_argument("--raw-records", type=int, help="records of the raw baselines (100000)")
    parser.add_argument(
        "--passthrough-only",
        action="store_true",
        help="the raw section's passthrough rows only (aiokafka loop, Faust, batch runner, "
        "quixstreams), without the perf tools and the confluent-kafka loop",
    )
    parser.add_argument("--backlog", type=int, help="backlog resources (default 500000)")
    parser.add_argument("--backlog-workers", type=int, default=2)
    parser.add_argument("--backlog-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument(
        "--backlog-repetitions",
        type=int,
        help="backlog runs, each on topics of its own (default: --repetitions; 1 with --quick)",
    )
    parser.add_argument("--probes", type=int, help="latency probes (default 300)")
    parser.add_argument(
        "--latency-rate",
        type=float,
        help="background load of the latency section, resources/s (default: half the measured "
        "1-worker end-to-end rate; 100 when the e2e section does not run)",
    )
    parser.add_argument(
        "--latency-light-rate",
        type=float,
        default=LIGHT_RATE,
        help="load of the latency section's reported light-load rows, resources/s (default "
        f"{LIGHT_RATE:.0f}; 0 leaves them out)",
    )
    parser.add_argument(
        "--delivery-patients", type=int, help="patients of the delivery section (default 300)"
    )
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)"
    )
    parser.add_argument("--no-readme", action="store_true", help="leave README.md alone")
    parser.add_argument("--output", default="results", help="docs/bench/<output>.{json,md}")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("CAREMESH_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quick = args.quick
    singles = args.singles or (300 if quick else 1000)
    bundles = args.bundles or (30 if quick else 100)
    # 100,000: with 20,000 the aiokafka loop ran for 1.6 s, and Faust's stream buffer (16,384
    # events in the tuned variants) took in most of the input before its agent had to keep up
    raw_records = args.raw_records or (5000 if quick else 100_000)
    backlog_n = args.backlog or (20_000 if quick else 500_000)
    probes = args.probes or (30 if quick else 300)
    backlog_reps = args.backlog_repetitions or (1 if quick else args.repetitions)
    sections = args.only or list(SECTIONS)
    needs_broker = bool(set(sections) - BROKER_FREE)
    if needs_broker and not reachable(args.bootstrap):
        print(
            f"bench: no Kafka broker answers at {args.bootstrap}; `make bench` starts one "
            "(or `make kafka-up`; --only cpu and --only views need none)",
            file=sys.stderr,
        )
        return 2
    meta = machine()
    meta["load_before"] = load_note()
    prefix = run_prefix()
    messages = corpus.messages(singles, bundles)
    scale = args.e2e_scale or (1 if quick else 5)
    work = pipeline.workload(singles * scale, bundles * scale)
    results: list[Result] = []
    one_worker_rate = 0.0

    def section(name: str, fn: Callable[[], list[Result]]) -> None:
        if name not in sections:
            return
        started = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        rows = fn()
        results.extend(rows)
        for r in rows:
            print(
                f"[bench]   {r.name}: {r.value:,.4g} {r.unit} vs {r.baseline:,.4g} "
                f"→ {r.ratio:.2f} ({r.target}, {'met' if r.met else 'MISSED'})",
                file=sys.stderr,
                flush=True,
            )
        print(f"[bench] {name} took {time.monotonic() - started:.0f} s", file=sys.stderr)

    try:
        section(
            "raw",
            lambda: raw.results(
                args.bootstrap,
                prefix,
                raw_records,
                args.repetitions,
                passthrough_only=args.passthrough_only,
            ),
        )
        section("cpu", lambda: stages.results(messages, args.repetitions))
        section("e2e", lambda: pipeline.results(args.bootstrap, prefix, work, args.repetitions))
        for r in results:
            if r.name.startswith("end to end: 1 worker"):
                one_worker_rate = r.value
        rate = max(20.0, min(one_worker_rate / 2, 1000.0)) if one_worker_rate else 100.0
        rate = args.latency_rate or rate
        section(
            "latency",
            lambda: latency_result(
                args.bootstrap,
                prefix,
                rate,
                probes,
                light_rate=args.latency_light_rate,
                repetitions=args.repetitions,
            ),
        )
        section(
            "backlog",
            lambda: pipeline.backlog(
                args.bootstrap,
                prefix,
                backlog_n,
                args.backlog_workers,
                args.backlog_timeout,
                backlog_reps,
            ),
        )
        delivery_patients = args.delivery_patients or (60 if quick else 300)
        section(
            "delivery",
            lambda: delivery.results(
                args.bootstrap, prefix, delivery_patients, 4, args.repetitions
            ),
        )
        section("views", lambda: views.results(args.repetitions))
    finally:
        if needs_broker:
            deleted = delete_topics(args.bootstrap, prefix)
            print(f"[bench] deleted {deleted} topics under {prefix}", file=sys.stderr)
    settings = {
        "repetitions": args.repetitions,
        "single messages": singles,
        "bundles of 20": bundles,
        "resources": sum(corpus.resource_count(m) for m in messages),
        "e2e resources (with care teams, enrolments)": sum(corpus.resource_count(m) for m in work),
        "raw records (1 KB)": raw_records,
        "backlog resources": backlog_n,
        "backlog workers": args.backlog_workers,
        "backlog repetitions": backlog_reps,
        "latency probes": probes,
        "latency load (resources/s)": round(rate),
        "latency light load (resources/s)": round(args.latency_light_rate),
        "partitions": raw.PARTITIONS,
        "sections": ",".join(sections),
    }
    table = write(results, settings, name=args.output, meta=meta)
    print(table)
    if not args.no_readme and set(sections) == set(SECTIONS):
        README.write_text(splice_readme(README.read_text(), table))
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
