"""The audit-free parts of an activity rule (`snapshot`, `record_when`): validated with the rest, as a table of
(TOML, message); the packaged catalogue gives every action rule a snapshot equivalent."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.activities import load_activities
from config.tables import load_tables
from l2c.errors import ConfigError

RULE = '[[activity]]\nname = "X"\ntable = "quote"\n'


def test_every_packaged_action_rule_has_a_snapshot_equivalent() -> None:
    rules = load_activities(None, load_tables())
    assert all(r.snapshot is not None for r in rules if r.trigger == "action")
    closed = next(r for r in rules if r.name == "Quote Closed")
    assert closed.snapshot is not None and closed.snapshot.targets == [5, 6]
    owner = next(r for r in rules if r.name == "Owner Changed")
    assert owner.snapshot is not None and owner.snapshot.targets is None  # any change


@pytest.mark.parametrize(("toml", "message"), [
    (RULE + 'trigger = "action"\naction = 4\nsnapshot = { column = "signedon", to = 1 }\n',
     "column signedon is not among the declared"),
    (RULE + 'trigger = "action"\naction = 4\nsnapshot = { to = 1 }\n', "snapshot.column: Field required"),
    (RULE + 'trigger = "action"\naction = 4\nsnapshot = { column = "statecode", into = 1 }\n',
     "snapshot.into: Extra inputs"),
    (RULE + 'trigger = "created"\nsnapshot = { column = "statecode", to = 1 }\n',
     "`snapshot` only goes with trigger 'action'"),
    (RULE + 'trigger = "action"\naction = 4\nrecord_when = { column = "statecode", to = 1 }\n',
     "`record_when` needs `record_date` and `to`"),
    (RULE + 'trigger = "action"\naction = 4\nrecord_date = "closedon"\nrecord_when = { column = "statecode" }\n',
     "`record_when` needs `record_date` and `to`"),
    (RULE + 'trigger = "action"\naction = 4\nrecord_date = "closedon"\nrecord_when = { column = "colour", to = 1 }\n',
     "column colour is not among the declared"),
])
def test_invalid_fallback_rules(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "activities.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_activities(path, load_tables())
    assert message in str(caught.value), str(caught.value)
    assert caught.value.exit_code == 2
