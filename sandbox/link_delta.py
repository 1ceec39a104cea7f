"""The Delta Lake layout of a Link export (docs/LINK.md §6, D2, D6), written with the `deltalake` package.

`deltalake/<table>_partitioned/` holds the latest row per Id (the Link's periodic MERGE: "the Delta Lake table
will have an in-place update structure", DOCS DELTA), soft deletes kept as IsDelete=True rows (DOCS TRANS),
partitioned by PartitionId = year of createdon (1900 if null), in native types: Id and GUIDs strings, times
timestamp UTC (a DateOnly column at its UTC midnight), IsDelete boolean, versionnumber long, money decimal.
Each export is one commit per table (an overwrite of the merged state), so a reader sees a new Delta version
per sync it did not read yet; the choice metadata tables and `audit_partitioned` (D10) sit beside them.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from deltalake import write_deltalake

from sandbox.link_audit import audit_rows
from sandbox.link_csv import MONEY_SCALE
from sandbox.link_model import metadata_frames
from sandbox.link_rows import current_rows
from sandbox.link_versions import LINK_TABLES, Cycles
from sandbox.orgdata import OrgData
from sandbox.schema import TABLES

DELTA_ROOT = "deltalake"


def table_dir(out: Path, name: str) -> Path:
    return out / DELTA_ROOT / f"{name}_partitioned"


def _native(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.col(pl.Date).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        pl.col(pl.Float64).cast(pl.Decimal(38, MONEY_SCALE)),
    )


def _commit(path: Path, frame: pl.DataFrame, partitioned: bool) -> None:
    write_deltalake(str(path), frame.to_arrow(), mode="overwrite",
                    partition_by=["PartitionId"] if partitioned else None)


def write_delta(org: OrgData, out: Path, cycles: Cycles, upto: int, first: bool) -> dict[str, int]:
    """One commit per table with the merged state up to batch `upto`; the metadata tables on the first export
    only (they do not change). Returns rows per table."""
    counts: dict[str, int] = {}
    for name in LINK_TABLES:
        rows = current_rows(org, TABLES[name], cycles, upto)
        frame = _native(rows.rename({"_part": "PartitionId"}).drop("_batch"))
        _commit(table_dir(out, name), frame, partitioned=True)
        counts[name] = frame.height
    audit = audit_rows(org, cycles, upto)
    _commit(table_dir(out, "audit"), audit, partitioned=True)
    counts["audit"] = audit.height
    if first:
        for name, frame in metadata_frames(LINK_TABLES).items():
            _commit(table_dir(out, name), frame, partitioned=False)
    return counts
