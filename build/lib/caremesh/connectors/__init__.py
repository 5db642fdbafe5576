"""The edges of caremesh; here the ingest ones: the FHIR HTTP API, the MLLP listener, bulk import.

Entry points the CLI calls:

- `caremesh.connectors.http_ingest.run_http_ingest(settings) -> int`
- `caremesh.connectors.mllp.run_mllp(settings) -> int`
- `caremesh.connectors.bulk_import.import_paths(paths, settings, source, progress=True)`

Each writes the bytes it received to an ingest topic and answers its sender only after Kafka
acknowledged the write (DESIGN §4); what it cannot accept is refused at the edge, never written.
"""

from __future__ import annotations

SOURCE_URN = "urn:caremesh:source:"
"""The CloudEvents `ce_source` of a record a source sent is this prefix plus the source id."""


def source_urn(source: str) -> str:
    """The `ce_source` of a configured source system."""
    return SOURCE_URN + source
