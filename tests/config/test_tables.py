"""config/tables.toml validation: the packaged file is valid; invalid declarations as a table of
(TOML, message) all fail before any request with a ConfigError naming the table and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.tables import load_tables
from ground.errors import ConfigError

GOOD = '[[table]]\nname = "lead"\ncolumns = ["leadid"]\n'


def test_packaged_declarations_are_valid() -> None:
    tables = load_tables()
    assert {"lead", "opportunity", "quote", "salesorder", "invoice", "account", "systemuser"} <= {
        t.name for t in tables.table}
    assert all(t.audit for t in tables.audited)


@pytest.mark.parametrize(("toml", "message"), [
    ("", "table: Field required"),
    ("[[table]]\nname = \"lead\"\n", "table lead columns: Field required"),
    ('[[table]]\nname = "lead"\ncolumns = []\n', "table lead columns"),
    ('[[table]]\nname = "Lead!"\ncolumns = ["leadid"]\n', "table Lead! name"),
    ('[[table]]\nname = "lead"\ncolumns = ["leadid", "leadid"]\n', "columns lists leadid more than once"),
    ('[[table]]\nname = "lead"\ncolumns = ["leadid"]\naudit_columns = ["statecode"]\n',
     "audit_columns needs audit = true"),
    ('[[table]]\nname = "lead"\ncolumns = ["leadid"]\ncolour = "red"\n', "table lead colour: Extra inputs"),
    (GOOD + GOOD, "table lead is declared more than once"),
    ('[defaults]\nincremental = "sometimes"\n' + GOOD, "defaults.incremental"),
    ('[[table]]\nname = "lead"\ncolumns = "leadid"\n', "table lead columns"),
    ("[[table]\nname = 1", "is not valid TOML"),
])
def test_invalid_declarations(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "tables.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_tables(path)
    assert message in str(caught.value), str(caught.value)
    assert str(path) in str(caught.value) and caught.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the table declarations"):
        load_tables(tmp_path / "nope.toml")
