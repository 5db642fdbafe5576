"""Tables of SQL on FHIR views: typed Arrow columns, and writers to Parquet, CSV and DuckDB.

Each ViewDefinition (caremesh.research.sql_on_fhir) of an export becomes one table named after the
view (`name`, else its resource type in lower case): a `<name>.parquet` or `<name>.csv` file in
the output directory, or a table of one DuckDB file. Column types follow the view's `type`
(SQL on FHIR v2's FHIR-to-SQL mapping, kept to what survives pseudonymisation): boolean,
integer types as 64-bit integers, decimal as double, everything else as text (FHIR dates are
partial, e.g. a birth year, and stay ISO text); `collection: true` columns are lists (JSON text
in CSV). A value that does not fit a boolean or number column is a ViewEvaluationError (never a
silent null); in a text column, a value that is not text is written as its JSON text.

Everything is written beside its destination and moved into place only when complete: a failed
export leaves the previous files or database as they were.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from caremesh.errors import ConfigurationError
from caremesh.research.records import StudyResource
from caremesh.research.sql_on_fhir import (
    Column,
    Row,
    ViewDefinition,
    ViewEvaluationError,
    view_runner,
)

TABLE_BATCH: Final = 5000
_INTEGER: Final = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})


def _arrow_type(column: Column) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped]  # noqa: PLC0415

    if column.type == "boolean":
        base = pa.bool_()
    elif column.type in _INTEGER:
        base = pa.int64()
    elif column.type == "decimal":
        base = pa.float64()
    else:
        base = pa.string()
    return pa.list_(base) if column.collection else base


class _WrongTypeError(Exception):
    """A value that does not fit its column's type (turned into a ViewEvaluationError)."""


def _cell(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.collection:
        one = Column(column.name, column.path, None, False, column.type)
        return [_cell(one, v) for v in value] if isinstance(value, list) else [_cell(one, value)]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if column.type == "boolean":
        if not isinstance(value, bool):
            raise _WrongTypeError
        return value
    if column.type in _INTEGER:
        if not number or value != int(value):
            raise _WrongTypeError
        return int(value)
    if column.type == "decimal":
        if not number:
            raise _WrongTypeError
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


def table_names(views: Sequence[ViewDefinition]) -> list[str]:
    """The table of each view; ConfigurationError when two views would share one."""
    names = [v.name for v in views]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigurationError(f"two views would write the same table: {', '.join(twice)}")
    return names


class ViewTable:
    """One view's rows, batched into Arrow tables."""

    def __init__(self, view: ViewDefinition) -> None:
        import pyarrow as pa  # noqa: PLC0415

        self.view = view
        self.run = view_runner(view)
        self.schema = pa.schema([(c.name, _arrow_type(c)) for c in view.columns])
        self.rows: list[Row] = []
        self.count = 0
        self._pa: Any = pa

    def add(self, resource: Mapping[str, Any]) -> bool:
        """Add the resource's rows; True when a batch is ready."""
        for row in self.run(resource):
            cells: Row = {}
            for column in self.view.columns:
                try:
                    cells[column.name] = _cell(column, row[column.name])
                except _WrongTypeError:
                    raise ViewEvaluationError(
                        f"view {self.view.name}: column {column.name} is not of type "
                        f"{column.type} on a {self.view.resource}"
                    ) from None
            self.rows.append(cells)
        return len(self.rows) >= TABLE_BATCH

    def take(self) -> Any:
        """The pending rows as an Arrow table (and forget them)."""
        table = self._pa.Table.from_pylist(self.rows, schema=self.schema)
        self.count += len(self.rows)
        self.rows = []
        return table


class ViewTableWriter:
    """An ExportWriter that flattens each resource through every view into its table."""

    def __init__(self, fmt: str, views: Sequence[ViewDefinition], output: Path) -> None:
        try:
            import pyarrow  # noqa: F401, PLC0415
        except ImportError:
            raise ConfigurationError("view export needs pyarrow installed") from None
        table_names(views)
        self.fmt = fmt
        self.output = output
        self.tables = [ViewTable(v) for v in views]
        parent = output.parent if str(output.parent) else Path()
        if fmt == "duckdb" and output.is_dir():
            raise ConfigurationError(f"cannot write {output}: it is a directory")
        if fmt != "duckdb" and output.exists() and not output.is_dir():
            raise ConfigurationError(f"cannot write {output}: it is a file, not a directory")
        try:
            self.work = Path(
                tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".part", dir=parent)
            )
        except OSError as exc:
            raise ConfigurationError(f"cannot write {output}: {exc.strerror}") from None
        self._writers: list[Any] = [None] * len(self.tables)
        self._db: Any = None
        if fmt == "duckdb":
            import duckdb  # noqa: PLC0415

            self._db = duckdb.connect(str(self.work / "views.duckdb"))

    @property
    def counts(self) -> dict[str, int]:
        """Rows written per table (after commit)."""
        return {t.view.name: t.count for t in self.tables}

    def write(self, record: StudyResource) -> None:
        """Add the rows of one resource to every view's table."""
        for i, table in enumerate(self.tables):
            if table.add(record.resource):
                self._flush(i)

    def _flush(self, i: int) -> None:
        table = self.tables[i]
        arrow = table.take()
        name = table.view.name  # letters, digits and '_' (load_view): safe in SQL
        if self.fmt == "duckdb":
            self._db.register("batch", arrow)
            if self._writers[i] is None:
                self._db.execute(f'CREATE TABLE "{name}" AS SELECT * FROM batch')  # noqa: S608
                self._writers[i] = True
            else:
                self._db.execute(f'INSERT INTO "{name}" SELECT * FROM batch')  # noqa: S608
            self._db.unregister("batch")
            return
        if self._writers[i] is None:
            path = self.work / f"{name}.{self.fmt}"
            if self.fmt == "parquet":
                import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: PLC0415

                self._writers[i] = pq.ParquetWriter(str(path), table.schema)
            else:
                import pyarrow.csv as pacsv  # type: ignore[import-untyped]  # noqa: PLC0415

                self._writers[i] = pacsv.CSVWriter(str(path), _csv_schema(table.schema))
        if self.fmt == "csv":
            arrow = _csv_table(arrow)
        self._writers[i].write_table(arrow)

    def commit(self) -> None:
        """Write the last rows (every table, empty or not), then move the result into place."""
        for i in range(len(self.tables)):
            self._flush(i)
        for writer in self._writers:
            if writer is not None and writer is not True:
                writer.close()
        if self._db is not None:
            self._db.close()
            os.replace(self.work / "views.duckdb", self.output)
            shutil.rmtree(self.work, ignore_errors=True)
            return
        self.output.mkdir(parents=True, exist_ok=True)
        for table in self.tables:
            name = f"{table.view.name}.{self.fmt}"
            os.replace(self.work / name, self.output / name)
        shutil.rmtree(self.work, ignore_errors=True)

    def abort(self) -> None:
        """Delete everything unfinished."""
        for writer in self._writers:
            if writer is not None and writer is not True:
                with contextlib.suppress(Exception):
                    writer.close()
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _csv_schema(schema: Any) -> Any:
    import pyarrow as pa  # noqa: PLC0415

    return pa.schema(
        [(f.name, pa.string() if pa.types.is_list(f.type) else f.type) for f in schema]
    )


def _csv_table(table: Any) -> Any:
    import pyarrow as pa  # noqa: PLC0415

    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_list(field.type):
            texts = [None if v is None else orjson.dumps(v).decode() for v in column.to_pylist()]
            columns.append(pa.array(texts, pa.string()))
        else:
            columns.append(column)
    return pa.Table.from_arrays(columns, schema=_csv_schema(table.schema))
