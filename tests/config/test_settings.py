"""Settings precedence (one test per pair) and invalid values as a table; no network."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings, load_settings
from ground.errors import ConfigError

VARS = ("L2C_SINCE", "DATAVERSE_URL", "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "L2C_DATA_DIR",
        "L2C_MAX_CONCURRENCY", "L2C_PAGE_SIZE", "L2C_CA_BUNDLE", "AZURE_AUTHORITY_HOST")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.uses_sandbox
    assert settings.page_size == 5000 and settings.max_concurrency == 8
    assert settings.data_dir == Path("data")
    assert settings.azure_authority_host == "https://login.microsoftonline.com"


def test_dotenv_beats_default(isolated: Path) -> None:
    (isolated / ".env").write_text("L2C_PAGE_SIZE=100\n")
    assert load_settings().page_size == 100


def test_environment_beats_dotenv(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated / ".env").write_text("L2C_PAGE_SIZE=100\n")
    monkeypatch.setenv("L2C_PAGE_SIZE", "200")
    assert load_settings().page_size == 200


def test_argument_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2C_PAGE_SIZE", "200")
    assert Settings(L2C_PAGE_SIZE=300).page_size == 300  # type: ignore[call-arg]


def test_secret_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "s3cr3t-value")
    settings = load_settings()
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" not in str(settings.model_dump())


@pytest.mark.parametrize(("name", "value", "message"), [
    ("DATAVERSE_URL", "http://contoso.crm.dynamics.com", "must be an https:// URL"),
    ("DATAVERSE_URL", "contoso", "must be an https:// URL"),
    ("AZURE_AUTHORITY_HOST", "http://login.example", "must be an https:// URL"),
    ("L2C_MAX_CONCURRENCY", "0", "greater than or equal to 1"),
    ("L2C_MAX_CONCURRENCY", "53", "less than or equal to 52"),
    ("L2C_PAGE_SIZE", "5001", "less than or equal to 5000"),
    ("L2C_PAGE_SIZE", "many", "valid integer"),
    ("L2C_SINCE", "last tuesday", "must be an ISO date"),
])
def test_invalid_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert name in str(caught.value) and message in str(caught.value)
    assert caught.value.exit_code == 2


def test_invalid_secret_value_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAVERSE_URL", "http://x")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "topsecret-123")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "topsecret-123" not in str(caught.value)


def test_trailing_slash_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAVERSE_URL", "https://contoso.crm4.dynamics.com/")
    assert load_settings().dataverse_url == "https://contoso.crm4.dynamics.com"
