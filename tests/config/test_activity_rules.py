"""config/activities.toml validation: the packaged catalogue is valid, covers CONTRACT.md's catalogue and gives
every action rule an audit-free equivalent; invalid rules as a table of (TOML, message) fail with a ConfigError
(exit 2) naming the rule and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.activities import load_activities
from config.tables import load_tables
from ground.errors import ConfigError
from sandbox.simulator import ACTIVITIES

RULE = '[[activity]]\nname = "X"\ntable = "quote"\n'


def test_packaged_catalogue_is_valid_and_complete() -> None:
    rules = load_activities(None, load_tables())
    assert {r.name for r in rules} == set(ACTIVITIES)  # the default catalogue of CONTRACT.md


def test_every_packaged_action_rule_has_a_snapshot_equivalent() -> None:
    rules = load_activities(None, load_tables())
    assert all(r.snapshot is not None for r in rules if r.trigger == "action")
    closed = next(r for r in rules if r.name == "Quote Closed")
    assert closed.snapshot is not None and closed.snapshot.targets == [5, 6]
    owner = next(r for r in rules if r.name == "Owner Changed")
    assert owner.snapshot is not None and owner.snapshot.targets is None  # any change


@pytest.mark.parametrize(("toml", "message"), [
    ("", "activity: Field required"),
    (RULE, "rule 'X' trigger: Field required"),
    (RULE + 'trigger = "sometimes"\n', "rule 'X' trigger"),
    (RULE + 'trigger = "action"\n', "trigger 'action' needs `action"),
    (RULE + 'trigger = "changed"\nto = 1\n', "trigger 'changed' needs `column`"),
    (RULE + 'trigger = "changed"\ncolumn = "statecode"\n', "exactly one of `to` or `above`"),
    (RULE + 'trigger = "changed"\ncolumn = "statecode"\nto = 1\nabove = 2\n', "exactly one of `to` or `above`"),
    (RULE + 'trigger = "created"\ncolumn = "statecode"\n', "only go with trigger 'changed'"),
    (RULE + 'trigger = "created"\ncolour = "red"\n', "rule 'X' colour: Extra inputs"),
    ('[[activity]]\nname = "X"\ntable = "contract"\ntrigger = "created"\n', "table contract is not declared"),
    (RULE + 'trigger = "changed"\ncolumn = "signedon"\nto = 1\n', "column signedon is not among the declared"),
    ('[[activity]]\nname = "X"\ntable = "account"\ntrigger = "action"\naction = 13\n',
     "needs the audit history of account"),
    ("[[activity]\n", "is not valid TOML"),
    # the audit-free parts of a rule (`snapshot`, `record_when`)
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
    # the same rule twice (issue 24: exit 0 with hundreds of rows sharing an event_id), keys in another order
    (RULE + 'trigger = "action"\naction = 4\n' + '[[activity]]\ntrigger = "action"\naction = 4\ntable = "quote"\n'
     'name = "X"\n', "rules #1 and #2 ('X' on quote) are the same rule, declared twice"),
])
def test_invalid_rules(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "activities.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_activities(path, load_tables())
    assert message in str(caught.value), str(caught.value)
    assert caught.value.exit_code == 2


def test_different_rules_may_share_an_activity_name(tmp_path: Path) -> None:
    path = tmp_path / "activities.toml"
    path.write_text(RULE + 'trigger = "action"\naction = 4\n' + RULE + 'trigger = "changed"\ncolumn = "statecode"\n'
                    'to = 1\n' + RULE.replace("quote", "salesorder") + 'trigger = "action"\naction = 4\n')
    assert [(rule.name, rule.table, rule.trigger) for rule in load_activities(path, load_tables())] == [
        ("X", "quote", "action"), ("X", "quote", "changed"), ("X", "salesorder", "action")]
