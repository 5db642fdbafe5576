"""Read HL7's official FHIR Consent examples through the real consent API and count the passes.

Fetches hl7.fhir.r4.examples@4.0.1 and hl7.fhir.r5.examples@5.0.0 with `npm pack` into a cache
outside git (`$CAREMESH_EXAMPLES_CACHE`, default ~/.cache/caremesh/fhir-examples), starts the
consent API against the real broker (`--kafka`, default 127.0.0.1:9092) with topics of its own,
posts every Consent example as a source system (one source per example), asks GET /decision
the questions the team wrote from each example's narrative (tests/data/fhir-consent-examples.json)
and prints the pass count per release, and the known exceptions with their reason. An example
passes when it is accepted as expected and every answer is as expected. The logic is shared with
the integration test (tests/integration/consent/official_examples.py).

    .venv/bin/python scripts/consent-examples.py [--kafka HOST:PORT] [--verbose]

Nothing it downloads is committed; it prints element paths and codes, never patient data.
Exit status: 0 when every example passes but the known exceptions, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from caremesh import topics  # noqa: E402
from caremesh.connectors.consent_api import create_app  # noqa: E402
from caremesh.kafka import admin as kafka_admin  # noqa: E402
from caremesh.kafka.io import AsyncProducer  # noqa: E402
from caremesh.metrics import Metrics  # noqa: E402
from caremesh.tables.consent_ledger import ConsentLedger  # noqa: E402
from tests.integration.consent import official_examples as ex  # noqa: E402
from tests.integration.consent.servers import serve  # noqa: E402  (a real uvicorn server)


def run(kafka: str, verbose: bool) -> int:
    wants = ex.expected()
    examples = {release: ex.consent_examples(release) for release in ex.PACKAGES}
    sources = [ex.source_id(r, e) for r, found in examples.items() for e in found]
    admin = uuid.uuid4().hex
    prefix = f"consent-examples-{uuid.uuid4().hex[:8]}."
    settings = ex.settings_for(kafka, prefix, sources, admin)
    kafka_admin.ensure_topics(
        kafka,
        topics.BASE_TOPICS,
        partitions=settings.kafka.partitions,
        replication_factor=1,
        prefix=prefix,
    )
    producer = AsyncProducer(kafka)
    ledger = ConsentLedger(kafka, prefix + topics.CONSENT_EVENTS)
    with serve(create_app(settings, producer, ledger, Metrics())) as url:
        results = ex.check_all(url, examples, wants, admin)
    producer.close(timeout=10)
    unexpected = 0
    for result in results:
        if verbose or not result.ok:
            print("\n".join(result.lines()))
        unexpected += not result.ok and result.known is None
    for release in ex.PACKAGES:
        mine = [r for r in results if r.release == release]
        passed = sum(r.ok for r in mine)
        said = "official Consent examples read as their narrative says"
        print(f"{release}: {passed}/{len(mine)} {said}")
    for result in results:
        if result.known is not None and not result.ok:
            print(f"known exception {result.release} {result.example_id}: {result.known}")
    return 1 if unexpected else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--kafka", default="127.0.0.1:9092", help="bootstrap servers")
    parser.add_argument("--verbose", action="store_true", help="print every example")
    args = parser.parse_args()
    return run(args.kafka, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
