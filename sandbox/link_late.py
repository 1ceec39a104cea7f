"""Late batches of a Link export: about one sync cycle in LATE_EVERY whose first commit to the lake failed and was
retried (docs/LINK.md §3; issue 25), fixed by (seed, batch) so every export of the org agrees.

- Append-only CSV: a table's rows of the late batch are appended with that table's next (not late) batch, after
  its rows, byte for byte as they would have been (their SinkModifiedOn is the batch's own): file order is not
  time order, so a reader orders versions by SinkModifiedOn and versionnumber (D6), never by position.
- Incremental folders: the late batch's folder is abandoned: its CSVs are written but never its model.json, and
  Synapse.log never names it (D7: not complete). Its rows are committed again into the next folder that
  completes, with their own versionnumber/modifiedon and that folder's SinkModifiedOn (C-CONN in docs/LINK.md §3:
  "their data is picked up from the later folder Synapse Link re-commits it to"); the retry's duplicate rows are
  not re-committed.
"""

from __future__ import annotations

import polars as pl

from sandbox.link_rows import sink_time
from sandbox.link_versions import Cycles

LATE_EVERY = 300  # about one batch in this many is late
_MIX, _WORD = 2_246_822_519, 1 << 32


def is_late(batch: int, seed: int) -> bool:
    """The initial sync (batch -1) is never late."""
    return batch >= 0 and ((batch + 3) * _MIX + seed * 40_503) % _WORD % LATE_EVERY == 0


def late(batch: pl.Expr, seed: int) -> pl.Expr:
    return (batch >= 0) & (((batch + 3) * _MIX + seed * 40_503) % _WORD % LATE_EVERY == 0)


def append_order(own: pl.DataFrame, earlier: pl.DataFrame, pending: list[int], seed: int) \
        -> tuple[pl.DataFrame, list[int]]:
    """A table's rows appended by one export in file order, and the late batches still waiting. `own`: the
    export rows of its batches; `earlier`: the rows of the late batches `pending` from earlier exports."""
    batches = own.get_column("_batch").unique().to_list()
    targets = recommit_targets(pending, batches, seed)
    mapping = pl.DataFrame({"_batch": list(targets), "_write": list(targets.values())},
                           schema={"_batch": pl.Int64, "_write": pl.Int64})
    is_late_row = late(pl.col("_batch"), seed)
    rows = (pl.concat([earlier, own]).join(mapping, on="_batch", how="left", maintain_order="left")
            .with_columns(pl.when(is_late_row).then(pl.col("_write")).otherwise(pl.col("_batch")).alias("_write"))
            .filter(pl.col("_write").is_not_null())
            .sort("_write", is_late_row, "_batch", maintain_order=True).drop("_write"))
    waiting = sorted(b for b in {*pending, *batches} if is_late(b, seed) and b not in targets)
    return rows, waiting


def recommit_targets(pending: list[int], batches: list[int], seed: int) -> dict[int, int]:
    """For each late batch (pending from earlier exports or among `batches`, the batches with rows in this
    export): the next batch with rows that is not late, its rows' folder; a late batch without one waits."""
    published = sorted(b for b in batches if not is_late(b, seed))
    out: dict[int, int] = {}
    for batch in sorted(set(pending) | {b for b in batches if is_late(b, seed)}):
        later = [b for b in published if b > batch]
        if later:
            out[batch] = later[0]
    return out


def recommits(rows: pl.DataFrame, targets: dict[int, int], cycles: Cycles, seed: int) -> pl.DataFrame:
    """The rows of the late batches in `targets` as the later folder commits them again: one per version (the
    retry's duplicates dropped), `_batch` and SinkModifiedOn of that folder."""
    if not targets:
        return rows.clear()
    mapping = pl.DataFrame({"_batch": list(targets), "_target": list(targets.values())},
                           schema={"_batch": pl.Int64, "_target": pl.Int64})
    again = (rows.filter(pl.col("_batch").is_in(list(targets)))
             .unique(["Id", "versionnumber", "IsDelete"], keep="first", maintain_order=True)
             .join(mapping, on="_batch", how="inner", maintain_order="left"))
    return again.with_columns(pl.col("_target").alias("_batch"),
                              SinkModifiedOn=sink_time(cycles, pl.col("_target"), seed)).drop("_target")
