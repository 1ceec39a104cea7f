"""The activity rules (config/activities.toml) as typed, validated data.

Invalid rules fail before any work with a ConfigError naming the rule and the problem (exit 2): unknown keys,
a trigger without what it needs (`action` for "action", `column` and `to`/`above` for "changed"), a table
or column not declared in config/tables.toml, a `snapshot` on a trigger other than "action" (the others read
the rows directly), a `record_when` without `record_date` or without `to`, and the same rule declared twice
(every field alike: each would give every one of its events a second time, under the same event id). Two
different rules may share an activity name.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config.tables import TablesConfig
from ground.errors import ConfigError

Scalar = int | float | str | bool


class Condition(BaseModel):
    """A column of the rows moving into `to` (a value, or any of a list); without `to`, any change of it."""

    model_config = ConfigDict(extra="forbid")
    column: str = Field(min_length=1)
    to: Scalar | list[Scalar] | None = None

    @property
    def targets(self) -> list[Scalar] | None:
        return None if self.to is None else self.to if isinstance(self.to, list) else [self.to]


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    table: str
    trigger: Literal["created", "deleted", "action", "changed"]
    action: int | None = None
    column: str | None = None
    to: int | float | str | bool | None = None
    above: float | None = None
    record_date: str | None = None
    record_when: Condition | None = None  # the record_date dates the rule only for rows in this state
    snapshot: Condition | None = None  # what an "action" looks like in the rows when there is no audit

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        if self.trigger == "action" and self.action is None:
            raise ValueError("trigger 'action' needs `action = <audit action code>`")
        if self.trigger == "changed":
            if not self.column:
                raise ValueError("trigger 'changed' needs `column`")
            if (self.to is None) == (self.above is None):
                raise ValueError("trigger 'changed' needs exactly one of `to` or `above`")
        elif self.column or self.to is not None or self.above is not None:
            raise ValueError(f"`column`/`to`/`above` only go with trigger 'changed', not '{self.trigger}'")
        if self.snapshot is not None and self.trigger != "action":
            raise ValueError(f"`snapshot` only goes with trigger 'action', not '{self.trigger}'")
        if self.record_when is not None and (self.record_date is None or self.record_when.to is None):
            raise ValueError("`record_when` needs `record_date` and `to`")
        return self


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    activity: list[Rule] = Field(min_length=1)


def load_activities(path: Path | None, tables: TablesConfig) -> list[Rule]:
    """The rules at `path`, or the packaged default catalogue (config/activities.toml)."""
    if path is None:
        path = Path(str(resources.files("config").joinpath("activities.toml")))
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the activity map {path}: {exc.strerror}",
                          hint="set L2C_ACTIVITY_MAP to an existing file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}",
                          hint="fix the syntax at that line (L2C_ACTIVITY_MAP names the file)") from None
    try:
        rules = Catalogue.model_validate(data).activity
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        where = ".".join(map(str, loc)) or "top level"
        if len(loc) >= 2 and loc[0] == "activity" and isinstance(loc[1], int):
            entries = data.get("activity", [])
            name = entries[loc[1]].get("name", f"#{loc[1] + 1}") if isinstance(entries, list) else "?"
            where = f"rule '{name}'" + (f" {'.'.join(map(str, loc[2:]))}" if len(loc) > 2 else "")
        raise ConfigError(f"{path}: {where}: {first['msg']}", hint="fix the rule (see the file's header)") from None
    numbers: dict[str, int] = {}  # a rule, every field as validated -> the number it first came with
    for number, rule in enumerate(rules, start=1):
        earlier = numbers.setdefault(rule.model_dump_json(), number)
        if earlier != number:
            raise ConfigError(f"{path}: rules #{earlier} and #{number} ('{rule.name}' on {rule.table}) are the same "
                              "rule, declared twice", hint="remove one of them (rules are numbered from the top of "
                                                           "the file)")
    declared = {t.name: t for t in tables.table}
    for rule in rules:
        table = declared.get(rule.table)
        if table is None:
            raise ConfigError(f"{path}: rule '{rule.name}': table {rule.table} is not declared",
                              hint="declare it in config/tables.toml")
        conditions = (rule.snapshot, rule.record_when)
        for column in (rule.column, rule.record_date, *(c.column for c in conditions if c is not None)):
            if column and column not in table.columns:
                raise ConfigError(f"{path}: rule '{rule.name}': column {column} is not among the declared columns "
                                  f"of {rule.table}", hint="add it to the table's `columns` in config/tables.toml")
        if rule.trigger in ("action", "changed", "deleted") and not table.audit:
            raise ConfigError(f"{path}: rule '{rule.name}' needs the audit history of {rule.table}",
                              hint=f"set audit = true for {rule.table} in config/tables.toml")
    return rules


def detail_columns(rules: list[Rule]) -> dict[str, set[str]]:
    """table -> the columns whose old/new values the `changed` rules read: the audit rows whose details the
    extract fetches (besides `audit_columns` and Delete rows)."""
    needed: dict[str, set[str]] = {}
    for rule in rules:
        if rule.trigger == "changed" and rule.column is not None:
            needed.setdefault(rule.table, set()).add(rule.column)
    return needed
