"""The tables of l2c.duckdb beside event_log and cases that the analysis views of sql/views.sql and the exports
read: the object model's [[analysis]] queries (config/tables.toml: accounts, users, quotes, orders, invoices by
default), polars SQL over the newest landed version of every record."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from config.tables import TablesConfig
from ground.errors import ConfigError


def analysis_tables(records: Mapping[str, pl.LazyFrame], model: TablesConfig) -> dict[str, pl.DataFrame]:
    """One frame per [[analysis]] query, by its name."""
    context = pl.SQLContext(frames=dict(records), eager=False)
    out = {}
    for table in model.analysis:
        try:
            out[table.name] = context.execute(table.sql, eager=False).collect()
        except (pl.exceptions.SQLInterfaceError, pl.exceptions.SQLSyntaxError, pl.exceptions.ColumnNotFoundError,
                pl.exceptions.InvalidOperationError) as exc:
            raise ConfigError(f"analysis table {table.name}: {str(exc).splitlines()[0]}",
                              hint="fix its query in the table declarations (L2C_TABLES names the file)") from None
    return out
