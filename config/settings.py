"""The one Settings class: environment, then `.env`, then defaults (CONTRACT.md, Configuration).

`.env` is read by `DotEnvFile`, in time linear in its size: python-dotenv's parser, then `${VAR}` references
resolved against the lines above and the environment as python-dotenv does, but with one lookup per reference
(python-dotenv copies every value read so far for each line, and pydantic-settings' own .env source walks every
field for each unknown name: a 150k-line file took minutes). A line that does not parse is an error naming the
line, never skipped.
"""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from dotenv.parser import parse_stream
from dotenv.variables import parse_variables
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources import DotEnvSettingsSource

from ground.errors import ConfigError

MAX_PAGE_SIZE = 5000  # Dataverse's cap on odata.maxpagesize
MAX_CONCURRENCY = 52  # Dataverse's per-user concurrent request limit


ENV_FILE = Path(".env")


class Settings(BaseSettings):
    # env_file=(): pydantic-settings' own .env source reads no file (DotEnvFile reads it, see the module docstring),
    # while `Settings(_env_file=None)` still says "no .env" and `_env_file=PATH` names another one.
    model_config = SettingsConfigDict(env_file=(), env_file_encoding="utf-8", extra="ignore")

    dataverse_url: str | None = Field(default=None, validation_alias="DATAVERSE_URL")
    azure_tenant_id: str | None = Field(default=None, validation_alias="AZURE_TENANT_ID")
    azure_client_id: str | None = Field(default=None, validation_alias="AZURE_CLIENT_ID")
    azure_client_secret: SecretStr | None = Field(default=None, validation_alias="AZURE_CLIENT_SECRET")
    azure_client_certificate_path: Path | None = Field(
        default=None, validation_alias="AZURE_CLIENT_CERTIFICATE_PATH"
    )
    azure_client_certificate_password: SecretStr | None = Field(
        default=None, validation_alias="AZURE_CLIENT_CERTIFICATE_PASSWORD"
    )
    azure_authority_host: str = Field(
        default="https://login.microsoftonline.com", validation_alias="AZURE_AUTHORITY_HOST"
    )
    # A remote Link export (connector/link_remote.py) signs in as the Azure Storage SDKs do: a connection string,
    # else an account key, else Microsoft Entra (the AZURE_TENANT_ID/AZURE_CLIENT_* app, else DefaultAzureCredential).
    azure_storage_connection_string: SecretStr | None = Field(
        default=None, validation_alias="AZURE_STORAGE_CONNECTION_STRING"
    )
    azure_storage_account_key: SecretStr | None = Field(default=None, validation_alias="AZURE_STORAGE_ACCOUNT_KEY")
    ca_bundle: Path | None = Field(default=None, validation_alias="L2C_CA_BUNDLE")
    data_dir: Path = Field(default=Path("data"), validation_alias="L2C_DATA_DIR")
    since: str | None = Field(default=None, validation_alias="L2C_SINCE")
    max_concurrency: int = Field(default=8, ge=1, le=MAX_CONCURRENCY, validation_alias="L2C_MAX_CONCURRENCY")
    page_size: int = Field(default=MAX_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, validation_alias="L2C_PAGE_SIZE")
    # How long one request may take to answer, and how long a failing request is retried (429s, 5xx, resets,
    # timeouts) before the run gives up with exit 4.
    http_timeout: float = Field(default=120.0, gt=0, validation_alias="L2C_HTTP_TIMEOUT")
    retry_budget: float = Field(default=900.0, gt=0, validation_alias="L2C_RETRY_BUDGET")
    activity_map: Path | None = Field(default=None, validation_alias="L2C_ACTIVITY_MAP")  # default: packaged
    tables_file: Path | None = Field(default=None, validation_alias="L2C_TABLES")  # default: config/tables.toml
    # The built-in sandbox's org when DATAVERSE_URL is unset (its clock moves with `l2c sandbox advance`).
    sandbox_seed: int = Field(default=42, validation_alias="L2C_SANDBOX_SEED")
    sandbox_leads: int = Field(default=1000, ge=100, validation_alias="L2C_SANDBOX_LEADS")
    # Where the rows come from: the Dataverse Web API, or an Azure Synapse Link / Link to Fabric export at
    # L2C_LINK_URL (docs/LINK.md); L2C_LINK_LANGUAGE is the language code of the choice labels read from it.
    source: Literal["webapi", "link"] = Field(default="webapi", validation_alias="L2C_SOURCE")
    link_url: str | None = Field(default=None, validation_alias="L2C_LINK_URL")
    link_language: int = Field(default=1033, ge=1, validation_alias="L2C_LINK_LANGUAGE")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The one priority order: explicit arguments, process environment, .env, defaults.
        assert isinstance(dotenv_settings, DotEnvSettingsSource)
        chosen = dotenv_settings.env_file
        env_file = ENV_FILE if chosen == () else Path(chosen) if isinstance(chosen, str | os.PathLike) else None
        return (init_settings, env_settings, DotEnvFile(settings_cls, env_file))

    @field_validator("dataverse_url", "azure_authority_host")
    @classmethod
    def _https_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None if value == "" else value
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"must be an https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("since")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value:
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"must be an ISO date such as 2024-01-31, got {value!r}") from None
        return value or None

    @property
    def uses_sandbox(self) -> bool:
        return self.source == "webapi" and not self.dataverse_url


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and `.env`, or ConfigError naming the variable (secrets masked)."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "configuration"
        raise ConfigError(
            f"invalid setting {name}: {first['msg']}",
            hint="fix it in the environment or .env (see README, Configuration)",
        ) from None
    if settings.source == "link" and not settings.link_url:
        raise ConfigError("L2C_LINK_URL is not set, and L2C_SOURCE=link reads the export it points to",
                          hint="set L2C_LINK_URL to the export's folder, abfss:// or OneLake URL (see README, "
                               "Configuration)")
    return settings


class DotEnvFile(EnvSettingsSource):
    """The settings a `.env` file holds (none when `path` is None or not a file), read once, linearly."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        self.path = path
        super().__init__(settings_cls)  # reads the file through _load_env_vars

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self.path is None or not self.path.is_file():
            return {}
        values = read_env_file(self.path)
        return {(k if self.case_sensitive else k.lower()): v for k, v in values.items()
                if not (self.env_ignore_empty and v == "")}


def read_env_file(path: Path) -> dict[str, str | None]:
    """NAME -> value of every line of a `.env` file, `${NAME}` and `${NAME:-default}` resolved as python-dotenv
    resolves them (the lines above first, then the environment); ConfigError naming a line that does not parse
    (never its text: it may hold a secret)."""
    try:
        with path.open(encoding="utf-8") as stream:
            bindings = list(parse_stream(stream))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="save it as UTF-8 text of NAME=value lines") from None
    broken = [b.original.line for b in bindings if b.error]
    if broken:
        raise ConfigError(f"{path}: line {', '.join(map(str, broken))} is not NAME=value",
                          hint="fix or remove it (see README, Configuration)")
    values: dict[str, str | None] = {}
    lookup = ChainMap[str, str | None](values, os.environ)  # type: ignore[arg-type]
    for binding in bindings:
        if binding.key is None:
            continue
        if binding.value is None:
            values[binding.key] = None
        else:
            values[binding.key] = "".join(atom.resolve(lookup) for atom in parse_variables(binding.value))
    return values
