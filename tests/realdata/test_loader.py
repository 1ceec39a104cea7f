"""The payload loader: exactly the README's repairs, on exactly those files, and the `.http` envelope read as
published (status line, headers with trailing spaces, a body kept byte for byte)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from tests.realdata import ORG_URL, PLACEHOLDERS, REPAIRS, envelope, load, names, published, repair

SHARED = Path("/work/shared/realdata")


def test_there_are_the_28_payloads_of_the_readme() -> None:
    readme = (Path(__file__).parent / "payloads" / "README.md").read_text("utf-8")
    assert len(names()) == 28
    for name in names():
        assert f"| {name} |" in readme, name


@pytest.mark.parametrize("name", [n for n in names() if n not in REPAIRS])
def test_every_other_file_parses_as_published(name: str) -> None:
    as_published, loaded = load(name, repaired=False), load(name)
    assert (as_published.status, dict(as_published.headers), as_published.body) == \
        (loaded.status, dict(loaded.headers), loaded.body)
    if name.endswith(".json") or loaded.body.lstrip().startswith(b"{"):
        assert loaded.json is not None and loaded.json == as_published.json
    else:  # the $batch answers
        assert loaded.json is None and loaded.body.lstrip().startswith(b"--batchresponse_")


@pytest.mark.parametrize("name", sorted(REPAIRS))
def test_each_repair_changes_its_file_and_only_then_it_parses(name: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        load(name, repaired=False)
    published_text, repaired_text = REPAIRS[name]
    _, _, body = envelope(name)
    after = load(name)
    assert body.count(published_text) == 1 and after.body != body
    # The repaired body is the published one with that one text replaced: nothing else moved.
    start = body.index(published_text)
    assert after.body == body[:start] + repaired_text + body[start + len(published_text):]
    assert isinstance(after.json, dict)
    # A corrected upstream file (the repair already in it) is noticed, not repaired again.
    with pytest.raises(ValueError, match="no longer applies"):
        repair(name, after.body)


def test_the_http_envelope_is_read_as_published() -> None:
    select = load("09_docs_select_name_revenue.http")  # "HTTP/1.1 200 OK  " and headers with trailing spaces
    assert select.status == 200
    assert select.headers["content-type"] == "application/json; odata.metadata=minimal"
    assert select.headers["OData-Version"] == "4.0"
    assert select.json["value"][0]["revenue"] == Decimal("20000.0000")
    assert str(select.json["value"][0]["revenue"]) == "20000.0000"
    error = load("12_docs_error_400_plugin_annotations.http")  # no blank line before its body
    assert error.status == 400 and list(error.headers) == ["Content-Type"]
    assert error.body.startswith(b"{\n") and error.json["error"]["code"] == "0x80040265"
    entity = load("13_docs_entitydefinitions_account.http")  # body lines with trailing spaces are kept
    assert entity.body.startswith(b"{  \n") and entity.body.endswith(b"}  \n  \n")
    audit = load("01_docs_audit_list_deleted_contacts.http")
    assert audit.headers["Preference-Applied"] == 'odata.include-annotations="*"'
    assert load("24_efcore_batch_changeset_404.multipart").status is None
    assert load("16_notes_ct_disabled_0x80072491.json").status is None


def test_placeholders_become_the_org_url_everywhere() -> None:
    for name in names():
        payload = load(name, "https://org.example.com/")
        assert not any(p in payload.body for p in PLACEHOLDERS), name
        assert all("[Organization" not in value for value in payload.headers.values()), name
    delta = load("05_docs_changetracking_initial.http").json["@odata.deltaLink"]
    assert delta.startswith(ORG_URL + "/api/data/v9.0/accounts?")
    batch = load("21_docs_batch_response.http", "https://org.example.com").text
    assert "Location: https://org.example.com/api/data/v9.2/tasks(d31ba648-c592-ed11-aad1-000d3a993550)" in batch


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared realdata folder is not on this machine")
def test_the_copies_are_the_shared_folders_files_byte_for_byte() -> None:
    for name in names():
        assert published(name) == (SHARED / "payloads" / name).read_bytes(), name
    ours = (Path(__file__).parent / "payloads" / "README.md").read_bytes()
    assert ours.startswith((SHARED / "README.md").read_bytes())
