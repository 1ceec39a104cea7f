"""Azurite, Microsoft's Azure Storage emulator, as a test service: its blob endpoint over HTTPS on a free loopback
port, with a certificate from a trustme CA that the tests trust explicitly.

Azurite is the npm package pinned in tests/azurite/package.json; `make test` installs it (`npm ci --prefix
tests/azurite`). Without it the remote tests fail when CI is set and skip with the reason elsewhere. The account is
the emulator's well-known development account (docs: learn.microsoft.com azure/storage/common/storage-use-azurite,
"Well-known storage account and key"); its key is public and protects nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

REPO = Path(__file__).resolve().parents[2]
AZURITE_DIR = REPO / "tests" / "azurite"
AZURITE_BLOB = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"successfully listens on (https?://[0-9.]+:\d+)")
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service: `blob_endpoint` is the account's URL (path-style, the emulator's form)."""

    origin: str  # https://127.0.0.1:<port>
    ca_path: Path

    @property
    def blob_endpoint(self) -> str:
        return f"{self.origin}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.blob_endpoint};")

    def url(self, container: str, path: str = "") -> str:
        return f"{self.blob_endpoint}/{container}/{path}".rstrip("/")


def missing(reason: str) -> None:
    """CI must run the remote tests: there a missing emulator is a failure, locally a skip that says why."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the remote Link tests", pytrace=False)
    pytest.skip(reason)


def start_azurite(workdir: Path) -> tuple[subprocess.Popen[str], Azurite]:
    """Start azurite-blob over HTTPS on a free loopback port (it reports the port it got) and wait until it
    listens; the caller stops the process."""
    if shutil.which("node") is None:
        missing("node is not installed (Azurite runs on node)")
    if not AZURITE_BLOB.exists():
        missing(f"Azurite is not installed: run `npm ci --prefix {AZURITE_DIR.relative_to(REPO)}` (make test does)")
    workdir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="l2c test azurite")
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_path = workdir / "azurite-cert.pem", workdir / "azurite-key.pem", workdir / "azurite-ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    command = [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", "0", "--cert", str(cert), "--key", str(key),
               "--inMemoryPersistence", "--extentMemoryLimit", "256", "--skipApiVersionCheck", "--loose",
               "--disableTelemetry", "--silent"]
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               stdin=subprocess.DEVNULL)
    assert process.stdout is not None
    lines: deque[str] = deque(maxlen=50)
    found: list[str] = []
    ready = threading.Event()

    def drain() -> None:  # reads every line for the process's whole life, so its pipe never fills
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())
            match = _LISTENING.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    ready.wait(START_TIMEOUT_S)
    if not found:
        stop(process)
        output = "\n".join(lines)
        pytest.fail(f"Azurite did not listen within {START_TIMEOUT_S:.0f} s (exit {process.returncode}):\n{output}",
                    pytrace=False)
    return process, Azurite(origin=found[0], ca_path=ca_path)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
