"""`python -m bench [--quick]`: run the benchmarks on the local broker and print ratio tables."""

from __future__ import annotations

import argparse
import os

from bench import corpus, ingest, latency
from bench.harness import write


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--repetitions", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--singles", type=int, default=4000, help="single-resource messages")
    parser.add_argument("--bundles", type=int, default=400, help="Bundles of 20")
    parser.add_argument(
        "--bootstrap", default=os.environ.get("CAREMESH_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    args = parser.parse_args()
    messages = corpus.messages(args.singles, args.bundles)
    results = [
        ingest.cpu_ratio(messages, args.repetitions),
        ingest.throughput_ratio(args.bootstrap, messages, args.repetitions),
        *latency.latency_result(args.bootstrap),
    ]
    settings = {
        "repetitions": args.repetitions,
        "single messages": args.singles,
        "bundles of 20": args.bundles,
        "partitions": 6,
        "resources": sum(corpus.resource_count(m) for m in messages),
    }
    print(write(results, settings))
    return 0 if all(r.met for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
