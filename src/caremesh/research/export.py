"""Research export core: read study records, apply retractions, flatten rows, write the files.

A study topic (`research.<study>.v1`, keyed by study pseudonym) holds pseudonymised FHIR
resources and retraction records (`{"caremeshEvent": "retraction", "pseudonym": ...}`, written by
the research stage on a consent withdrawal or an erasure). An export keeps a resource unless a
retraction of its pseudonym comes after it: same partition and a greater offset, or any other
partition (a pseudonym lives in one partition; elsewhere order is unknown, so the record goes).
Resources recorded after a retraction (a re-consent) are kept.

Output formats: NDJSON, one resource per line as written by the research stage; and Apache
Parquet (format 2.x, through pyarrow), one row per resource with the string columns of
`PARQUET_COLUMNS`; or, with SQL on FHIR views, one table per view (caremesh.research.tables) in
Parquet, CSV or DuckDB. Files are written beside their destination and moved into place only when
complete, so a failed export never leaves a partial file under the requested name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, Protocol

import orjson

from caremesh.errors import ConfigurationError
from caremesh.fhir.elements import clinical_date
from caremesh.research.records import (
    Retraction,
    StudyResource,
)
from caremesh.research.sql_on_fhir import ViewDefinition
from caremesh.research.tables import ViewTableWriter

PARQUET_COLUMNS: Final = (
    "pseudonym",
    "resourceType",
    "id",
    "keyId",
    "effective",
    "code",
    "resource",
)
"""Parquet columns (all strings, null when absent): `effective` is the first of the resource's
clinical date elements present, `code` the first coding of `code` as `system|code`, `resource`
the whole resource as JSON."""

PARQUET_BATCH: Final = 5000


class ExportFormat(StrEnum):
    """What `caremesh research export --format` writes (CSV and DuckDB: views only)."""

    NDJSON = "ndjson"
    PARQUET = "parquet"
    CSV = "csv"
    DUCKDB = "duckdb"


@dataclass
class RetractionIndex:
    """The retractions seen, per pseudonym: (partition, greatest offset) pairs."""

    latest: dict[str, dict[int, int]] = field(default_factory=dict)
    count: int = 0

    def add(self, retraction: Retraction) -> None:
        """Remember one retraction."""
        parts = self.latest.setdefault(retraction.pseudonym, {})
        parts[retraction.partition] = max(parts.get(retraction.partition, -1), retraction.offset)
        self.count += 1

    def retracted(self, pseudonym: str, partition: int, offset: int) -> bool:
        """True when a retraction of `pseudonym` comes after the record at (partition, offset)."""
        parts = self.latest.get(pseudonym)
        if not parts:
            return False
        return any(p != partition or last > offset for p, last in parts.items())


@dataclass
class ExportSummary:
    """What an export read and wrote (counts only)."""

    records: int = 0
    """Resources written."""
    pseudonyms: int = 0
    """Distinct pseudonyms among the resources written."""
    retracted: int = 0
    """Resources read but dropped because a retraction came after them."""
    retractions: int = 0
    """Retraction records read."""
    invalid: int = 0
    """Records that were neither a resource nor a retraction (skipped)."""
    read: int = 0
    """Records read from the topic, of every kind."""
    tables: dict[str, int] = field(default_factory=dict)
    """Rows written per view table (view exports only)."""


def _first_code(resource: Mapping[str, Any]) -> str | None:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, Mapping) else None
    if isinstance(codings, list):
        for coding in codings:
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                system = coding.get("system")
                return f"{system if isinstance(system, str) else ''}|{coding['code']}"
    return None


def flat_row(record: StudyResource) -> dict[str, str | None]:
    """The Parquet row of one resource (keys: `PARQUET_COLUMNS`)."""
    resource = record.resource
    rid = resource.get("id")
    return {
        "pseudonym": record.pseudonym,
        "resourceType": str(resource.get("resourceType")),
        "id": rid if isinstance(rid, str) else None,
        "keyId": record.key_id,
        "effective": clinical_date(resource),
        "code": _first_code(resource),
        "resource": orjson.dumps(resource).decode(),
    }


class ExportWriter(Protocol):
    """Writes resources to a file that appears under its name only on `commit`."""

    def write(self, record: StudyResource) -> None:
        """Add one resource."""
        ...

    def commit(self) -> None:
        """Finish the file and move it into place."""
        ...

    def abort(self) -> None:
        """Delete the unfinished file."""
        ...


class _AtomicFile:
    def __init__(self, output: Path) -> None:
        self.output = output
        parent = output.parent if str(output.parent) else Path()
        if output.is_dir():
            raise ConfigurationError(f"cannot write {output}: it is a directory")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=parent)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigurationError(f"cannot write {output}: {reason}") from None
        self.temp = Path(name)
        self.handle: IO[bytes] = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.handle.close()
        os.replace(self.temp, self.output)

    def abort(self) -> None:
        self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()


class NdjsonWriter(_AtomicFile):
    """One resource per line (UTF-8 JSON, `\\n`-terminated)."""

    def write(self, record: StudyResource) -> None:
        """Add one resource."""
        self.handle.write(orjson.dumps(record.resource, option=orjson.OPT_APPEND_NEWLINE))


class ParquetWriter(_AtomicFile):
    """Rows of `flat_row`, written in row groups of `PARQUET_BATCH` (pyarrow)."""

    def __init__(self, output: Path) -> None:
        try:
            import pyarrow as pa  # type: ignore[import-untyped]  # noqa: PLC0415
            import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: PLC0415
        except ImportError:
            raise ConfigurationError("Parquet export needs pyarrow installed") from None
        super().__init__(output)
        self._pa: Any = pa
        self._schema = pa.schema([(name, pa.string()) for name in PARQUET_COLUMNS])
        self._writer: Any = pq.ParquetWriter(self.handle, self._schema)
        self._rows: list[dict[str, str | None]] = []

    def write(self, record: StudyResource) -> None:
        """Add one resource."""
        self._rows.append(flat_row(record))
        if len(self._rows) >= PARQUET_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            table = self._pa.Table.from_pylist(self._rows, schema=self._schema)
            self._writer.write_table(table)
            self._rows = []

    def commit(self) -> None:
        """Write the last row group and the footer, then move the file into place."""
        self._flush()
        self._writer.close()
        super().commit()

    def abort(self) -> None:
        """Delete the unfinished file."""
        with contextlib.suppress(Exception):
            self._writer.close()
        super().abort()


def open_writer(
    fmt: ExportFormat, output: Path, views: Sequence[ViewDefinition] = ()
) -> ExportWriter:
    """A writer for `fmt` at `output` (ConfigurationError when it cannot be written).

    With `views`, each resource is flattened through every view into that view's table
    (caremesh.research.tables): files in the directory `output` (Parquet, CSV) or tables of
    the DuckDB file `output`. Without views, resources are written whole (NDJSON, Parquet).
    """
    if views:
        if fmt is ExportFormat.NDJSON:
            raise ConfigurationError("views write tables: use --format parquet, csv or duckdb")
        return ViewTableWriter(fmt.value, views, output)
    if fmt in {ExportFormat.CSV, ExportFormat.DUCKDB}:
        raise ConfigurationError(f"--format {fmt.value} writes views: give at least one --view")
    if fmt is ExportFormat.PARQUET:
        return ParquetWriter(output)
    return NdjsonWriter(output)
