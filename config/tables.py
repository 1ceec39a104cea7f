"""The table declarations (config/tables.toml) as typed, validated data.

Validated whole before the first request: unknown keys, wrong types, duplicate tables or columns, and a
primary key missing from `columns` are ConfigErrors naming the table and the problem. Whether each table
and column exists in the org is checked against its metadata before any data is read (connector/metadata.py).
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ground.errors import ConfigError

DEFAULT_TABLES = "tables.toml"


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    incremental: Literal["auto", "watermark"] = "auto"
    watermark_column: str = "modifiedon"
    watermark_overlap_seconds: int = Field(default=300, ge=0, le=86400)


class TableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    columns: list[str] = Field(min_length=1)
    incremental: Literal["auto", "watermark"] | None = None
    watermark_column: str | None = None
    audit: bool = False
    audit_columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> TableConfig:
        for field_name in ("columns", "audit_columns"):
            values = getattr(self, field_name)
            duplicates = sorted({c for c in values if values.count(c) > 1})
            if duplicates:
                raise ValueError(f"{field_name} lists {', '.join(duplicates)} more than once")
        if self.audit_columns and not self.audit:
            raise ValueError("audit_columns needs audit = true")
        return self


class TablesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: Defaults = Field(default_factory=Defaults)
    table: list[TableConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TablesConfig:
        names = [t.name for t in self.table]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"table {', '.join(duplicates)} is declared more than once")
        return self

    def incremental(self, table: TableConfig) -> str:
        return table.incremental or self.defaults.incremental

    def watermark_column(self, table: TableConfig) -> str:
        return table.watermark_column or self.defaults.watermark_column

    @property
    def audited(self) -> list[TableConfig]:
        return [t for t in self.table if t.audit]


def load_tables(path: Path | None = None) -> TablesConfig:
    """The declarations at `path`, or the packaged default; ConfigError names the file and the problem."""
    source = str(path) if path else f"config/{DEFAULT_TABLES}"
    try:
        packaged = resources.files("config").joinpath(DEFAULT_TABLES)
        text = Path(path).read_text("utf-8") if path else packaged.read_text("utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read the table declarations {source}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}",
                          hint="fix the syntax at that line (L2C_TABLES names the file)") from None
    try:
        return TablesConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(data, first["loc"])
        raise ConfigError(f"{source}: {where}: {first['msg']}",
                          hint="fix the declaration (see the file's header)") from None


def _where(data: dict[str, object], loc: tuple[int | str, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "table" and isinstance(loc[1], int):
        tables = data.get("table")
        name = tables[loc[1]].get("name", f"#{loc[1] + 1}") if isinstance(tables, list) else f"#{loc[1] + 1}"
        rest = ".".join(str(part) for part in loc[2:])
        return f"table {name}" + (f" {rest}" if rest else "")
    return ".".join(str(part) for part in loc) or "top level"
