"""A DuckDB file that follows a study topic: view rows, retractions as deletes, its own offsets.

`caremesh research follow` keeps one DuckDB file up to date from `research.<study>.v1`. The file
holds, per SQL on FHIR view, a table `_rows_<view>` (the view's columns plus the record's
`_pseudonym`) and a DuckDB view `<view>` over it with the view's columns only, which is what a
researcher queries; `_caremesh_offsets` (the next offset to read per partition) and
`_caremesh_follow` (the study and the views it was started with). Every batch of records is
applied in one transaction together with the offsets that follow it, so a follower killed at
any point resumes from the last committed batch with neither a duplicate nor a missing row.

A retraction deletes every row held under its pseudonym; resources recorded after it (a
re-consent) are added again, as an export keeps them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from caremesh.errors import ConfigurationError
from caremesh.research.records import Retraction, StudyResource
from caremesh.research.sql_on_fhir import ViewDefinition
from caremesh.research.tables import ViewTable, table_names


def _views_digest(views: Sequence[ViewDefinition]) -> str:
    shape = [[v.name, v.resource, v.column_names] for v in views]
    return hashlib.sha256(orjson.dumps(shape)).hexdigest()


class FollowStore:
    """The DuckDB file of a follower (one writer at a time: DuckDB locks the file)."""

    def __init__(self, path: Path, study: str, views: Sequence[ViewDefinition]) -> None:
        import duckdb  # noqa: PLC0415

        table_names(views)
        if path.is_dir():
            raise ConfigurationError(f"cannot write {path}: it is a directory")
        try:
            self.db: Any = duckdb.connect(str(path))
        except duckdb.Error:
            raise ConfigurationError(
                f"cannot open {path} as a DuckDB file (is it in use?)"
            ) from None
        self.tables = [ViewTable(v) for v in views]
        self._setup(path, study, _views_digest(views))

    def _setup(self, path: Path, study: str, digest: str) -> None:
        db = self.db
        db.execute("CREATE TABLE IF NOT EXISTS _caremesh_follow (study TEXT, views TEXT)")
        found = db.execute("SELECT study, views FROM _caremesh_follow").fetchall()
        if found and found[0] != (study, digest):
            self.db.close()
            raise ConfigurationError(f"{path} follows another study or other views; use a new file")
        db.execute("BEGIN TRANSACTION")
        if not found:
            db.execute("INSERT INTO _caremesh_follow VALUES (?, ?)", [study, digest])
        db.execute(
            "CREATE TABLE IF NOT EXISTS _caremesh_offsets "
            "(partition INTEGER PRIMARY KEY, next BIGINT)"
        )
        for table in self.tables:
            name = table.view.name  # letters, digits and '_' (load_view): safe in SQL
            columns = ", ".join(f'"{c}"' for c in table.view.column_names)
            db.register("empty", table.take())
            db.execute(
                f'CREATE TABLE IF NOT EXISTS "_rows_{name}" AS '  # noqa: S608
                f"SELECT ''::TEXT AS _pseudonym, * FROM empty LIMIT 0"
            )
            db.unregister("empty")
            db.execute(
                f'CREATE VIEW IF NOT EXISTS "{name}" AS SELECT {columns} FROM "_rows_{name}"'  # noqa: S608
            )
        db.execute("COMMIT")

    def offsets(self) -> dict[int, int]:
        """The next offset to read, per partition already read."""
        return dict(self.db.execute("SELECT partition, next FROM _caremesh_offsets").fetchall())

    def apply(
        self, records: Sequence[StudyResource | Retraction], positions: dict[int, int]
    ) -> tuple[int, int]:
        """Apply records in order and store `positions`, in one transaction.

        Returns (rows added, rows deleted)."""
        db = self.db
        added = deleted = 0
        db.execute("BEGIN TRANSACTION")
        try:
            pending: list[StudyResource] = []
            for record in records:
                if isinstance(record, StudyResource):
                    pending.append(record)
                    continue
                added += self._insert(pending)
                pending = []
                for table in self.tables:
                    gone = db.execute(
                        f'DELETE FROM "_rows_{table.view.name}" WHERE _pseudonym = ?',  # noqa: S608
                        [record.pseudonym],
                    ).fetchall()
                    deleted += int(gone[0][0]) if gone else 0
            added += self._insert(pending)
            for partition, offset in positions.items():
                db.execute(
                    "INSERT OR REPLACE INTO _caremesh_offsets VALUES (?, ?)", [partition, offset]
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            for table in self.tables:
                table.rows.clear()  # rows of the failed batch not yet inserted
            raise
        return added, deleted

    def _insert(self, records: Sequence[StudyResource]) -> int:
        if not records:
            return 0
        import pyarrow as pa  # type: ignore[import-untyped]  # noqa: PLC0415

        count = 0
        for table in self.tables:
            owners: list[str] = []
            for record in records:
                before = len(table.rows)
                table.add(record.resource)
                owners.extend([record.pseudonym] * (len(table.rows) - before))
            arrow = table.take()
            if arrow.num_rows == 0:
                continue
            arrow = arrow.add_column(0, "_pseudonym", pa.array(owners, pa.string()))
            self.db.register("batch", arrow)
            self.db.execute(
                f'INSERT INTO "_rows_{table.view.name}" SELECT * FROM batch'  # noqa: S608
            )
            self.db.unregister("batch")
            count += arrow.num_rows
        return count

    def close(self) -> None:
        """Close the file (everything applied is already committed)."""
        self.db.close()
