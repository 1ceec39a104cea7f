"""Remote Link exports against Azurite over HTTPS: a small export folder (model.json, headerless CSVs, a Delta
table; docs/LINK.md D2-D5) is uploaded with Microsoft's own SDK, then RemoteStore must list and read exactly what
pathlib sees in the local folder, and open the Delta table deltalake reads locally."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyarrow as pa
import pytest
from azure.storage.blob import BlobServiceClient
from deltalake import DeltaTable, write_deltalake

from config.settings import Settings
from connector.link_remote import object_store_trust, open_remote
from connector.link_url import parse_link_url
from ground.errors import AuthError, ConfigError, SourceUnavailable
from tests.connector.azurite import ACCOUNT, ACCOUNT_KEY, Azurite

CONTAINER = "dataverse-l2ctest-unq0001"  # dataverse-<environment>-<org> (LINK.md §1.1)
ROOT = "exports/run1"
WRONG_KEY = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc="

ATTRIBUTES = [("Id", "guid"), ("SinkCreatedOn", "dateTime"), ("SinkModifiedOn", "dateTime"), ("leadid", "guid"),
              ("subject", "string"), ("createdon", "dateTimeOffset"), ("modifiedon", "dateTime"),
              ("versionnumber", "int64"), ("statecode", "int32"), ("IsDelete", "boolean")]


def _row(i: int) -> str:
    guid = f"{i:08x}-0000-4000-8000-{i:012x}"
    subject = f'"Lead {i} ""quoted"", Zürich\nsecond line"' if i % 7 == 0 else f'"Lead {i}"'
    return (f'{guid},"6/28/2021 4:34:35 PM","6/28/2021 4:34:35 PM",{guid},{subject},'
            f'"2021-0{1 + i % 9}-25T16:21:09.0000000+00:00","2021-06-25T16:21:12Z",{1000 + i},{i % 3},False\n')


def write_export(root: Path) -> None:
    """A csv-inplace export (D2) of one table, metadata folders, and a Delta table (D2 delta layout)."""
    model = {"name": "cdm", "version": "1.0", "entities": [{
        "$type": "LocalEntity", "name": "lead",
        "annotations": [{"name": "Athena:InitialSyncState", "value": "Completed"}],
        "attributes": [{"name": n, "dataType": t, "maxLength": -1} for n, t in ATTRIBUTES],
        "partitions": [{"name": y, "location": f"https://{ACCOUNT}.dfs.core.windows.net/{CONTAINER}/lead/{y}.csv"}
                       for y in ("2021", "2022")]}]}
    (root / "lead").mkdir(parents=True)
    (root / "model.json").write_text(json.dumps(model, indent=2), encoding="utf-8")
    (root / "lead" / "2021.csv").write_text("".join(_row(i) for i in range(40)), encoding="utf-8")
    # Large enough that ranged reads cross adlfs's blocks and Azurite's chunking.
    (root / "lead" / "2022.csv").write_text("".join(_row(i) for i in range(40, 6040)), encoding="utf-8")
    meta = root / "OptionsetMetadata"
    meta.mkdir()
    (meta / "StateMetadata.csv").write_text('lead,statecode,0,"Open",1033\n', encoding="utf-8")
    athena = root / "Microsoft.Athena.TrickleFeedService"
    athena.mkdir()
    (athena / "lead-model.json").write_text("{}", encoding="utf-8")
    table = pa.table({"Id": ["a", "b", "c"], "subject": ["x", "y", None], "versionnumber": [1, 2, 3],
                      "IsDelete": [False, False, True], "PartitionId": ["2021", "2021", "2022"]})
    write_deltalake(str(root / "deltalake" / "lead_partitioned"), table, partition_by=["PartitionId"])
    write_deltalake(str(root / "deltalake" / "lead_partitioned"),
                    pa.table({"Id": ["d"], "subject": ["z"], "versionnumber": [4], "IsDelete": [False],
                              "PartitionId": ["2022"]}), mode="append")


def local_files(root: Path, under: str = "") -> dict[str, bytes]:
    base = root / under if under else root
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _no_developer_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(("AZURE_", "L2C_", "AZURITE_"))]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def export(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    write_export(root)
    service = BlobServiceClient(azurite.blob_endpoint, credential={"account_name": ACCOUNT, "account_key": ACCOUNT_KEY},
                                connection_verify=str(azurite.ca_path))
    container = service.create_container(CONTAINER)
    for relative, data in local_files(root).items():
        container.upload_blob(f"{ROOT}/{relative}", data)
    return root


def settings(azurite: Azurite, **extra: str) -> Settings:
    values = {"AZURE_STORAGE_ACCOUNT_KEY": ACCOUNT_KEY, "L2C_CA_BUNDLE": str(azurite.ca_path), **extra}
    return Settings(**values, _env_file=None)  # type: ignore[arg-type, call-arg]


def test_list_and_read_equal_the_local_folder(azurite: Azurite, export: Path) -> None:
    store = open_remote(azurite.url(CONTAINER, ROOT), settings(azurite))
    expected = local_files(export)
    entries = store.list()
    assert [(e.path, e.size) for e in entries] == [(p, len(b)) for p, b in expected.items()]
    assert all(e.version for e in entries)
    assert {e.path: store.read(e.path) for e in entries} == expected
    under = store.list("lead")
    assert [e.path for e in under] == list(local_files(export, "lead"))


def test_ranged_reads(azurite: Azurite, export: Path) -> None:
    store = open_remote(azurite.url(CONTAINER, ROOT), settings(azurite))
    data = (export / "lead" / "2022.csv").read_bytes()
    size = len(data)
    for start, end in [(0, 10), (5, 6), (1000, 200_000), (size - 17, None), (size - 1, size), (123_457, None)]:
        assert store.read("lead/2022.csv", start, end) == data[start:end], (start, end)


def test_connection_string_and_az_url(azurite: Azurite, export: Path) -> None:
    chosen = settings(azurite, AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
                      AZURE_STORAGE_ACCOUNT_KEY=WRONG_KEY)  # the connection string comes first
    store = open_remote(f"az://{CONTAINER}/{ROOT}", chosen)
    assert store.read("model.json") == (export / "model.json").read_bytes()
    uri, options = store.delta_location("deltalake/lead_partitioned")
    with object_store_trust(chosen):
        remote = DeltaTable(uri, storage_options=options)
    assert remote.version() == 1


def test_delta_table_equals_the_local_one(azurite: Azurite, export: Path) -> None:
    chosen = settings(azurite)
    store = open_remote(azurite.url(CONTAINER, ROOT), chosen)
    uri, options = store.delta_location("deltalake/lead_partitioned")
    assert uri == f"az://{CONTAINER}/{ROOT}/deltalake/lead_partitioned"
    assert options["endpoint"] == azurite.blob_endpoint and "allow_http" not in options
    with object_store_trust(chosen):
        remote = DeltaTable(uri, storage_options=options)
    local = DeltaTable(str(export / "deltalake" / "lead_partitioned"))
    assert remote.version() == local.version() == 1
    assert remote.to_pyarrow_table().sort_by("Id").equals(local.to_pyarrow_table().sort_by("Id"))


def test_delta_without_the_ca_is_refused(azurite: Azurite, export: Path) -> None:
    """object_store verifies TLS: without the emulator's CA in the trust it fails (no silent fallback)."""
    store = open_remote(azurite.url(CONTAINER, ROOT), settings(azurite))
    uri, options = store.delta_location("deltalake/lead_partitioned")
    with pytest.raises(Exception, match="(?i)certificate|UnknownIssuer"):
        DeltaTable(uri, storage_options={**options, "max_retries": "0"})  # delta-rs: no retries of the refusal


def test_wrong_key_is_an_auth_error_without_the_key(azurite: Azurite, export: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # not even a debug line of adlfs or the Azure SDK may hold it
    with pytest.raises(AuthError) as caught:
        open_remote(azurite.url(CONTAINER, ROOT), settings(azurite, AZURE_STORAGE_ACCOUNT_KEY=WRONG_KEY))
    assert caught.value.exit_code == 3
    said = str(caught.value) + capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert WRONG_KEY not in said and WRONG_KEY[:12] not in said and ACCOUNT_KEY[:12] not in said
    assert "Storage Blob Data Reader" in str(caught.value)


def test_missing_container_or_path_is_source_unavailable(azurite: Azurite, export: Path) -> None:
    for url in (azurite.url("no-such-container", ROOT), azurite.url(CONTAINER, "exports/none")):
        with pytest.raises(SourceUnavailable, match="no export at"):
            open_remote(url, settings(azurite))


def test_an_unreachable_account_is_source_unavailable_after_retries(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    monkeypatch.setattr("connector.link_remote.RETRY", {"initial_backoff": 0, "increment_base": 0, "retry_total": 1,
                                                          "random_jitter_range": 0})
    with pytest.raises(SourceUnavailable, match="cannot reach") as caught:
        open_remote("https://127.0.0.1:9/devstoreaccount1/c01/r",  # the discard port: nothing listens
                    Settings(AZURE_STORAGE_ACCOUNT_KEY=ACCOUNT_KEY, _env_file=None))  # type: ignore[call-arg]
    assert caught.value.exit_code == 4


def test_no_credential_at_all_is_an_auth_error(azurite: Azurite, export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither a key nor a connection string nor an Entra app: DefaultAzureCredential finds nothing here."""
    # azure-identity's own switch (AZURE_TOKEN_CREDENTIALS) keeps the chain to its environment credential: the
    # managed identity probe of a machine outside Azure takes ~10 s to give up.
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential")
    with pytest.raises(AuthError, match="cannot sign in") as caught:
        open_remote(azurite.url(CONTAINER, ROOT),
                    Settings(L2C_CA_BUNDLE=str(azurite.ca_path), _env_file=None))  # type: ignore[call-arg]
    assert caught.value.exit_code == 3


def test_an_untrusted_certificate_is_a_config_error(azurite: Azurite, export: Path) -> None:
    with pytest.raises(ConfigError, match="not trusted"):
        open_remote(azurite.url(CONTAINER, ROOT),
                    Settings(AZURE_STORAGE_ACCOUNT_KEY=ACCOUNT_KEY, _env_file=None))  # type: ignore[call-arg]


@pytest.mark.parametrize("url, variables, message", [
    ("az://c01/r", {"AZURE_STORAGE_ACCOUNT_KEY": ACCOUNT_KEY}, "names no storage account"),
    ("https://127.0.0.1:9/devstoreaccount1/c01/r",
     {"AZURE_STORAGE_CONNECTION_STRING": f"AccountName=other;AccountKey={ACCOUNT_KEY}"}, "is for account other"),
])
def test_credentials_that_cannot_fit_the_url(url: str, variables: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        open_remote(url, Settings(**variables, _env_file=None))  # type: ignore[arg-type, call-arg]
    assert ACCOUNT_KEY[:12] not in str(caught.value)


@pytest.mark.parametrize("url, message", [
    ("abfs://c@acct.dfs.core.windows.net/x", "unencrypted"),
    ("http://127.0.0.1:10000/devstoreaccount1/c", "unencrypted"),
    ("s3://bucket/x", "scheme"),
    ("abfss://acct.dfs.core.windows.net/x", "no container"),
    ("abfss://c@example.com/x", "not an ADLS Gen2 or OneLake host"),
    ("https://acct.dfs.core.windows.net/", "no container"),
    ("abfss://ws@onelake.dfs.fabric.microsoft.com/", "names the item"),
    ("https://example.com/a/b", "not an ADLS Gen2, OneLake or emulator host"),
    ("https://127.0.0.1:1/devstoreaccount1", "names the account, then the container"),
    ("https://acct.blob.core.windows.net/c/x?sv=2020&sig=abc", "query"),
    ("/local/folder", "scheme"),
    ("abfss://c:hunter2@acct.dfs.core.windows.net/x", "password"),
])
def test_bad_urls_are_config_errors_naming_the_forms(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_link_url(url)
    assert caught.value.exit_code == 2 and "abfss://<container>@<account>.dfs.core.windows.net" in str(caught.value)
    assert "sig=abc" not in str(caught.value) and "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url, kind, container, root, blob_endpoint", [
    ("abfss://dataverse-env-org@acct.dfs.core.windows.net/", "adls", "dataverse-env-org", "",
     "https://acct.blob.core.windows.net"),
    ("abfss://c@acct.dfs.core.windows.net/a/b/", "adls", "c", "a/b", "https://acct.blob.core.windows.net"),
    ("https://acct.dfs.core.chinacloudapi.cn/c/a", "adls", "c", "a", "https://acct.blob.core.chinacloudapi.cn"),
    ("abfss://Sales@onelake.dfs.fabric.microsoft.com/dv.Lakehouse/Tables", "onelake", "Sales", "dv.Lakehouse/Tables",
     "https://onelake.blob.fabric.microsoft.com"),
    ("https://onelake.dfs.fabric.microsoft.com/ws/dv.lakehouse/", "onelake", "ws", "dv.lakehouse",
     "https://onelake.blob.fabric.microsoft.com"),
    ("az://c/x/y", "connection", "c", "x/y", ""),
    ("https://localhost:10000/devstoreaccount1/c/r", "emulator", "c", "r", "https://localhost:10000/devstoreaccount1"),
])
def test_accepted_urls(url: str, kind: str, container: str, root: str, blob_endpoint: str) -> None:
    where = parse_link_url(url)
    assert (where.kind, where.container, where.root, where.blob_endpoint) == (kind, container, root, blob_endpoint)


def test_onelake_and_adls_delta_uris() -> None:
    from connector.link_remote import RemoteStore  # built without a connection: URIs only need the Location

    for url, expected in [
        ("abfss://c@acct.dfs.core.windows.net/r", "abfss://c@acct.dfs.core.windows.net/r/deltalake/t"),
        ("abfss://ws@onelake.dfs.fabric.microsoft.com/dv.Lakehouse", "abfss://ws@onelake.dfs.fabric.microsoft.com/"
                                                                     "dv.Lakehouse/deltalake/t"),
    ]:
        store = RemoteStore.__new__(RemoteStore)
        store.location = parse_link_url(url)
        store._settings = Settings(AZURE_STORAGE_ACCOUNT_KEY="a2V5", _env_file=None)  # type: ignore[call-arg]
        store._sync_credential = type("Token", (), {"get_token": lambda self, scope: type("T", (), {"token": "t"})})()
        store.url = url
        uri, options = store.delta_location("deltalake/t")
        assert uri == expected
        if "onelake" in url:  # OneLake takes only Entra tokens (ONELAKE), never the account key
            assert options == {"account_name": "onelake", "bearer_token": "t"}
        else:
            assert options == {"account_name": "acct", "account_key": "a2V5"}
