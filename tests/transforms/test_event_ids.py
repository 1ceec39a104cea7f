"""`event_id` is unique by construction and checked before the log is published (issue 24): two different rules
of one table may share an activity name, and a fact both find is one event; a log in which two events share an
id is never published (a bug to report), and the previous outputs stay as they were."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import polars as pl
import pytest

from config.settings import Settings
from connector.extract import extract
from sandbox.runtime import OrgState, Sandbox, SandboxOptions
from sandbox.webapi import PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY
from sql.load import transform_and_load as transform
from tests.conftest import settings_for
from transforms import build
from transforms.eventlog import LOG_ORDER, EventLog

# The same fact in a second spelling: a quote's Create audit row also has action 1 (Create), and the rule is
# dated by the same column: with the packaged `created` rule, each quote is "Quote Created" twice over.
TWIN = '\n[[activity]]\nname = "Quote Created"\ntable = "quote"\ntrigger = "action"\naction = 1\n' \
       'record_date = "createdon"\nsnapshot = { column = "statecode", to = 0 }\n'


@pytest.fixture(scope="module", params=["audit", "no audit"])
def lake(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A small org's lake, read with the audit (audit rows and record dates) or without (record dates)."""
    tmp = tmp_path_factory.mktemp("ids")
    withdrawn = {PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY} if request.param == "no audit" else set()
    with Sandbox(tmp / "sb", OrgState(seed=3, leads=150), SandboxOptions(withdrawn_privileges=withdrawn)) as sb:
        settings = settings_for(sb, tmp / "data")
        assert extract(settings).exit_code == 0
        yield settings


def test_two_rules_sharing_an_activity_give_each_fact_once(lake: Settings, tmp_path: Path) -> None:
    log = pl.read_parquet(transform(lake, full=True).event_log)
    rules = tmp_path / "activities.toml"
    rules.write_text(resources.files("config").joinpath("activities.toml").read_text("utf-8") + TWIN)
    twinned = pl.read_parquet(transform(lake.model_copy(update={"activity_map": rules}), full=True).event_log)
    assert twinned.get_column("event_id").n_unique() == twinned.height
    assert twinned.equals(log)
    assert log.filter(pl.col("activity") == "Quote Created").height > 0


def test_a_log_with_an_event_id_twice_is_not_published(lake: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    published = transform(lake, full=True)
    before = {path: path.read_bytes() for path in (published.event_log, published.cases_file, published.database)}
    real = build.build

    def doubled(*args: object, **kwargs: object) -> EventLog:  # a bug that gives one event twice
        built = real(*args, **kwargs)  # type: ignore[arg-type]
        return built._replace(log=pl.concat([built.log, built.log.head(1)]).sort(LOG_ORDER))

    monkeypatch.setattr(build, "build", doubled)
    with pytest.raises(RuntimeError, match=r"1 event ids occur more than once .*: it was not published; this is a bug"):
        transform(lake, full=True)
    assert {path: path.read_bytes() for path in before} == before
    assert not [p for p in lake.data_dir.rglob(".*") if ".tmp" in p.name]
