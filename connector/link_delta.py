"""Delta tables of a Link export (Synapse Link `deltalake/`, Link to Fabric `Tables/`), read with `deltalake`.

docs/LINK.md §6, D6: each Delta commit holds the merged latest row per Id; history before the last VACUUM is
not guaranteed, so only the newest version is read, and the reader remembers the version it read (D7: a version
is complete iff its `_delta_log/<n>.json` exists, which `deltalake` enforces). A table that does not open or a
Parquet file that does not read (cut, corrupt, vacuumed under the reader) is SourceUnavailable naming the table.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
from deltalake import DeltaTable

from connector.link_storage import ExportStore
from ground.errors import SourceUnavailable


def _open(store: ExportStore, path: str) -> DeltaTable:
    uri, options = store.delta_location(path)
    try:
        with store.trusted():  # object_store builds its HTTPS client here, with the CA it must trust
            return DeltaTable(uri, storage_options=options or None)
    except Exception as exc:  # deltalake raises its own TableNotFoundError, DeltaError, OSError, ...
        raise SourceUnavailable(f"{path} of the Link export {store.url}: not a readable Delta table "
                                f"({str(exc).splitlines()[0][:200]})",
                                hint="check that the export is complete (docs/LINK.md §6)") from None


def version(store: ExportStore, path: str) -> int:
    return int(_open(store, path).version())


def schema(store: ExportStore, path: str) -> pl.Schema:
    """The columns of the table's newest version, from its log only."""
    uri, options = store.delta_location(path)
    try:
        with store.trusted():
            return pl.scan_delta(uri, storage_options=options or None).collect_schema()
    except Exception as exc:  # as in _open
        raise SourceUnavailable(f"{path} of the Link export {store.url}: not a readable Delta table "
                                f"({str(exc).splitlines()[0][:200]})",
                                hint="check that the export is complete (docs/LINK.md §6)") from None


def read_table(store: ExportStore, path: str, at: int | None = None) -> pl.DataFrame:
    """The table's rows at its newest version (or `at`), as polars (partition columns included)."""
    table = _open(store, path)
    try:
        with store.trusted():
            if at is not None:
                table.load_as_version(at)
            frame = pl.from_arrow(table.to_pyarrow_table())
    except Exception as exc:  # pyarrow's ArrowInvalid / OSError on a cut or missing Parquet file
        raise SourceUnavailable(f"{path} of the Link export {store.url}: a data file does not read "
                                f"({str(exc).splitlines()[0][:200]})",
                                hint="check that the export is complete (docs/LINK.md §6); nothing of this table "
                                     "was landed from it") from None
    assert isinstance(frame, pl.DataFrame)
    return frame


def batches(store: ExportStore, path: str, rows: int) -> Iterator[pl.DataFrame]:
    """The table's rows at its newest version, `rows` at a time (an audit table holds millions: read whole, its
    text and the details decoded from it took more memory than a 1M-lead org's machine has)."""
    table = _open(store, path)
    try:
        with store.trusted():
            for batch in table.to_pyarrow_dataset().to_batches(batch_size=rows):
                if batch.num_rows:
                    frame = pl.from_arrow(batch)
                    assert isinstance(frame, pl.DataFrame)
                    yield frame
    except Exception as exc:  # as in read_table
        raise SourceUnavailable(f"{path} of the Link export {store.url}: a data file does not read "
                                f"({str(exc).splitlines()[0][:200]})",
                                hint="check that the export is complete (docs/LINK.md §6); nothing of this table "
                                     "was landed from it") from None
