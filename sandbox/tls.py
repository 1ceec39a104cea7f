"""Key material for the sandbox: its own CA, the HTTPS server certificate, and app-registration certificates.

`make_tls` makes a fresh trustme CA on every start, issues a certificate for 127.0.0.1 and localhost, writes
the CA (the public certificate only) into a directory so clients can be pointed at it through L2C_CA_BUNDLE,
and returns the server's `ssl.SSLContext`. Nothing here weakens verification: clients trust the sandbox by
trusting this CA file. `make_client_certificate` creates the self-signed certificate and RSA key of an Entra
app registration's certificate credential, with the thumbprints Entra and MSAL use: SHA-1 (hex as the Azure
portal shows it, base64url in the JWT `x5t` header) and SHA-256 (`x5t#S256`, which MSAL >= 1.35 sends when it
is given the public certificate).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import ssl
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CA_FILE_NAME = "l2c-sandbox-ca.pem"
SERVER_IDENTITIES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class SandboxTLS:
    """The CA file clients trust and the context the HTTPS server listens with."""

    ca_path: Path
    server_context: ssl.SSLContext
    ca: trustme.CA

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the sandbox CA (for raw-socket tests)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


def make_tls(directory: Path | str, identities: tuple[str, ...] = SERVER_IDENTITIES) -> SandboxTLS:
    """Create a CA and a server certificate; write the CA PEM into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="l2c sandbox")
    leaf = ca.issue_cert(*identities, organization_name="l2c sandbox")
    ca_path = directory / CA_FILE_NAME
    # Written via a temp file so a client reading L2C_CA_BUNDLE never sees half a PEM.
    tmp = ca_path.with_suffix(".tmp")
    tmp.write_bytes(ca.cert_pem.bytes())
    tmp.replace(ca_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    leaf.configure_cert(ctx)
    return SandboxTLS(ca_path=ca_path, server_context=ctx, ca=ca)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate credential: what is uploaded to the app registration and what the client signs with."""

    certificate: x509.Certificate
    private_key_pem: bytes  # PKCS#8, encrypted with `password` when one was given
    password: str | None
    bundle_path: Path | None = None  # key + certificate PEM, when written

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def sha1_thumbprint(self) -> str:
        """Upper-case hex, as the Azure portal shows it and MSAL's `thumbprint` expects."""
        return self.certificate.fingerprint(hashes.SHA1()).hex().upper()  # x5t is SHA-1 by RFC 7515

    @property
    def sha256_thumbprint(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex().upper()

    @property
    def x5t(self) -> str:
        """The JWT `x5t` header value (RFC 7515 4.1.7): base64url of the SHA-1 thumbprint."""
        return _b64url(self.certificate.fingerprint(hashes.SHA1()))

    @property
    def x5t_s256(self) -> str:
        """The JWT `x5t#S256` header value (RFC 7515 4.1.8)."""
        return _b64url(self.certificate.fingerprint(hashes.SHA256()))

    def bundle_pem(self) -> bytes:
        """Key then certificate in one PEM, the layout AZURE_CLIENT_CERTIFICATE_PATH points at."""
        return self.private_key_pem + self.cert_pem


def make_client_certificate(
    directory: Path | str | None = None,
    *,
    common_name: str = "l2c-sandbox-app",
    password: str | None = None,
    valid_days: int = 365,
    key_size: int = 2048,
    not_before: dt.datetime | None = None,
) -> ClientCertificate:
    """A self-signed RSA certificate, as `New-SelfSignedCertificate` would make; with `directory`, the
    key + certificate PEM is written there (mode 0600) and its path kept in `bundle_path`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(uuid.uuid4().int >> 1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode("utf-8"))
        if password
        else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    made = ClientCertificate(certificate=cert, private_key_pem=key_pem, password=password)
    if directory is None:
        return made
    path = Path(directory) / f"{common_name}.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never world-readable, even briefly
    with os.fdopen(fd, "wb") as out:
        out.write(made.bundle_pem())
    return replace(made, bundle_path=path)
