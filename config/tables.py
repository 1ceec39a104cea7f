"""The table declarations and the lead-to-cash object model (config/tables.toml) as typed, validated data.

Validated whole before the first request: unknown keys, wrong types, duplicate tables or columns, a primary key
missing from `columns`, and an object model that does not hold together (one case table; every member reaches
it through declared tables; case attributes for each case type; OCEL relations to declared tables) are
ConfigErrors naming the table and the problem. Whether each table and column exists in the org is checked
against its metadata before any data is read (connector/metadata.py).
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


NAME = r"^[a-z][a-z0-9_]*$"  # a logical name


class Via(BaseModel):
    """One way a record finds its case: follow its lookup `lookup` to a record of `table` (default: the case table)
    and take that record's case; or, with `from`, the first record of that table (by `first`, then its key) whose
    lookup `lookup` points at this record."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    lookup: str = Field(pattern=NAME)
    table: str | None = Field(default=None, pattern=NAME)
    from_: str | None = Field(default=None, alias="from", pattern=NAME)
    first: str | None = Field(default=None, pattern=NAME)

    @model_validator(mode="after")
    def _one_direction(self) -> Via:
        if self.from_ is not None and self.table is not None:
            raise ValueError("a case_via step has either `table` (follow the lookup) or `from` (the other way)")
        if self.first is not None and self.from_ is None:
            raise ValueError("`first` only goes with `from`")
        return self


class Relation(BaseModel):
    """An OCEL object-to-object relation: "record <qualifier> target record", from the record's lookup."""

    model_config = ConfigDict(extra="forbid")
    lookup: str = Field(pattern=NAME)
    qualifier: str = Field(min_length=1)
    target: str = Field(pattern=NAME)
    else_through: str | None = None  # an empty lookup is filled through this relation's target's own relation


class Ocel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attributes: dict[str, str] = Field(default_factory=dict)  # OCEL attribute -> column (`x.label`: its label)
    relations: list[Relation] = Field(default_factory=list)


class TableConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    columns: list[str] = Field(min_length=1)
    incremental: Literal["auto", "watermark"] | None = None
    watermark_column: str | None = None
    audit: bool = False
    audit_columns: list[str] = Field(default_factory=list)
    # The object model (see the file's header): None = extracted only.
    role: Literal["case", "member", "context"] | None = None
    case_via: list[Via] = Field(default_factory=list)
    own_case: bool = False
    display_name: str | None = None
    ocel: Ocel = Field(default_factory=Ocel)

    @property
    def label(self) -> str:
        """What the report calls the table's records."""
        return self.display_name or self.name

    @model_validator(mode="after")
    def _consistent(self) -> TableConfig:
        for field_name in ("columns", "audit_columns"):
            values = getattr(self, field_name)
            duplicates = sorted({c for c in values if values.count(c) > 1})
            if duplicates:
                raise ValueError(f"{field_name} lists {', '.join(duplicates)} more than once")
        if self.audit_columns and not self.audit:
            raise ValueError("audit_columns needs audit = true")
        if (self.role == "member") != bool(self.case_via or self.own_case):
            raise ValueError("a member table needs `case_via` (or `own_case`), and only a member has them")
        return self


class CaseModel(BaseModel):
    """Which table's records are the cases, who acts, and each case type's attributes (SQL over the records)."""

    model_config = ConfigDict(extra="forbid")
    table: str = Field(pattern=NAME)
    users: str = Field(pattern=NAME)
    user_name: str = Field(pattern=NAME)
    attributes: dict[str, str] = Field(default_factory=dict)  # case type -> polars SQL, one row per case


class Analysis(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    sql: str = Field(min_length=1)


class TablesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defaults: Defaults = Field(default_factory=Defaults)
    case: CaseModel | None = None  # the object model; None: the tables are extracted only (no transform)
    analysis: list[Analysis] = Field(default_factory=list)
    table: list[TableConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TablesConfig:
        names = [t.name for t in self.table]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"table {', '.join(duplicates)} is declared more than once")
        self._check_model()
        return self

    def _check_model(self) -> None:
        if self.case is None:
            if any(t.role is not None for t in self.table) or self.analysis:
                raise ValueError("roles and [[analysis]] need the object model's [case] section")
            return
        by_name = {t.name: t for t in self.table}
        case = by_name.get(self.case.table)
        if case is None or case.role != "case" or [t.name for t in self.table if t.role == "case"] != [case.name]:
            raise ValueError(f"case.table {self.case.table!r} must be the one declared table with role = \"case\"")
        if self.case.users not in by_name:
            raise ValueError(f"case.users {self.case.users!r} is not a declared table")
        modelled = {t.name for t in self.table if t.role is not None}
        for table in self.table:
            for via in table.case_via:
                other = via.from_ or via.table or self.case.table
                if other not in modelled:
                    raise ValueError(f"table {table.name}: case_via reaches {other!r}, which is not a declared table "
                                     "with a role")
            for relation in table.ocel.relations:
                if relation.target not in modelled:
                    raise ValueError(f"table {table.name}: relation {relation.qualifier!r} targets {relation.target!r},"
                                     " which is not a declared table with a role")
                through = {r.qualifier for r in table.ocel.relations}
                if relation.else_through is not None and relation.else_through not in through:
                    raise ValueError(f"table {table.name}: relation {relation.qualifier!r} is filled through "
                                     f"{relation.else_through!r}, which is not one of its relations")
        wanted = {self.case.table, *(t.name for t in self.table if t.own_case)}
        if set(self.case.attributes) != wanted:
            raise ValueError(f"case.attributes needs one query per case type: {', '.join(sorted(wanted))}")
        analyses = [a.name for a in self.analysis]
        if len(set(analyses)) != len(analyses):
            raise ValueError("an [[analysis]] table name is used more than once")

    @property
    def model(self) -> CaseModel:
        """The object model's [case]; a ConfigError when the declarations have none (the transform needs it)."""
        if self.case is None:
            raise ConfigError("the table declarations have no object model ([case] and the tables' roles)",
                              hint="declare them as config/tables.toml does (L2C_TABLES names the file)")
        return self.case

    @property
    def modelled(self) -> list[TableConfig]:
        """The tables of the object model (with a role), in declaration order."""
        return [t for t in self.table if t.role is not None]

    def by_name(self, name: str) -> TableConfig | None:
        return next((t for t in self.table if t.name == name), None)

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
