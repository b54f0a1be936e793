"""Tessera's internal PKI: one CA and a certificate per service and for the operator CLI.

Each certificate names its holder with a SAN URI ``spiffe://tessera/<identity>``; the services
read the caller's identity from it (``shared.tls``). ``tessera pki init DIR`` writes the layout
``shared.tls.TlsFiles.from_env`` reads from ``TESSERA_TLS_DIR``:

- ``ca.pem``: the CAs every service trusts (two during a rotation's overlap);
- ``ca-key.pem``: the current CA's private key (keep it off the service hosts);
- ``<identity>.pem`` / ``<identity>-key.pem`` for each of :data:`IDENTITIES`.

Every file is replaced atomically (written aside, then renamed over), so a service reloading
its files never reads half of one. Keys are ECDSA P-256: small, and fast to handshake with.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_IDENTITIES = ("gateway", "issuer", "keys", "revocation")
OPERATOR = "operator"
IDENTITIES = (*SERVICE_IDENTITIES, OPERATOR)
SPIFFE_PREFIX = "spiffe://tessera/"
CA_DAYS = 3650
LEAF_DAYS = 397
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
PREVIOUS_CA_FILE = "ca-previous.pem"


def spiffe_id(identity: str) -> str:
    """The SAN URI that names ``identity`` in its certificate: ``spiffe://tessera/<identity>``."""
    return f"{SPIFFE_PREFIX}{identity}"


def cert_file(directory: Path, identity: str) -> Path:
    """Where ``identity``'s certificate is in a PKI directory."""
    return directory / f"{identity}.pem"


def key_file(directory: Path, identity: str) -> Path:
    """Where ``identity``'s private key is in a PKI directory."""
    return directory / f"{identity}-key.pem"


@dataclass(frozen=True)
class Authority:
    """A CA certificate and its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_ca(name: str = "Tessera internal CA", *, days: int = CA_DAYS) -> Authority:
    """A new self-signed CA that may sign leaf certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue(
    ca: Authority,
    identity: str,
    *,
    days: int = LEAF_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    dns_names: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``identity`` (client and server use) signed by ``ca``."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - dt.timedelta(minutes=5)
    end = not_after or start + dt.timedelta(days=days)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(identity))]
    names += [x509.DNSName(name) for name in dns_names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tessera {identity}")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert, key


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate, PEM-encoded."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The private key as unencrypted PKCS#8 PEM (this module writes it with mode 0600)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` by ``data`` in one rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_identity(
    directory: Path, identity: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    """Write one holder's key, then its certificate (a reader that sees the new certificate
    finds the key that goes with it)."""
    write_atomic(key_file(directory, identity), key_pem(key), 0o600)
    write_atomic(cert_file(directory, identity), cert_pem(cert))


def load_ca(directory: Path) -> Authority:
    """The current CA: the first certificate of ``ca.pem`` and ``ca-key.pem``."""
    certs = x509.load_pem_x509_certificates((directory / CA_FILE).read_bytes())
    key = serialization.load_pem_private_key((directory / CA_KEY_FILE).read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{directory / CA_KEY_FILE} is not an EC key")
    return Authority(certs[0], key)


def issue_all(directory: Path, ca: Authority, identities: tuple[str, ...] = IDENTITIES) -> None:
    """A new certificate and key from ``ca`` for each identity, written into ``directory``."""
    for identity in identities:
        cert, key = issue(ca, identity, dns_names=(identity, f"tessera-{identity}", "localhost"))
        write_identity(directory, identity, cert, key)


def init_pki(directory: Path, identities: tuple[str, ...] = IDENTITIES) -> Authority:
    """A new CA and a certificate per identity in ``directory``; refuses to overwrite a CA."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (directory / CA_KEY_FILE).exists():
        raise FileExistsError(f"{directory / CA_KEY_FILE} exists: use `tessera pki rotate`")
    ca = new_ca()
    write_atomic(directory / CA_KEY_FILE, key_pem(ca.key), 0o600)
    write_atomic(directory / CA_FILE, cert_pem(ca.cert))
    issue_all(directory, ca, identities)
    return ca


def present_identities(directory: Path) -> tuple[str, ...]:
    """The identities with a certificate in ``directory``; all of :data:`IDENTITIES` if none."""
    return tuple(i for i in IDENTITIES if cert_file(directory, i).exists()) or IDENTITIES


def rotate_pki(directory: Path) -> Authority:
    """Start a CA rotation: a new CA, trusted together with the old one (``ca.pem`` holds
    both), and every certificate re-issued by the new one. Once every service has picked up
    its new files, :func:`finish_rotation` stops trusting the old CA."""
    old = load_ca(directory)
    ca = new_ca()
    write_atomic(directory / PREVIOUS_CA_FILE, cert_pem(old.cert))
    # Trust both first, so a peer still holding an old certificate keeps working meanwhile.
    write_atomic(directory / CA_FILE, cert_pem(ca.cert) + cert_pem(old.cert))
    write_atomic(directory / CA_KEY_FILE, key_pem(ca.key), 0o600)
    issue_all(directory, ca, present_identities(directory))
    return ca


def finish_rotation(directory: Path) -> None:
    """End a rotation's overlap: trust only the current CA."""
    current = load_ca(directory)
    write_atomic(directory / CA_FILE, cert_pem(current.cert))
    with contextlib.suppress(FileNotFoundError):
        (directory / PREVIOUS_CA_FILE).unlink()
