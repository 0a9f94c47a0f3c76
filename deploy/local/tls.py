"""A local certificate authority for `make up` over TLS: a CA and the sink's certificate for its
host names, made once under the run directory with `cryptography` and reused while valid.

Only the stack's own worker trusts this CA (SMTP_CA_FILE); nothing is added to the system's.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = timedelta(days=3650)
CERT_VALIDITY = timedelta(days=365)
# Replaced this long before it expires, so that a stack started today runs for days.
RENEW_BEFORE = timedelta(days=7)
# Clocks of the processes that verify may be a little behind the one that issues.
BACKDATE = timedelta(minutes=5)
UNSPECIFIED_ADDRESSES = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class LocalTlsFiles:
    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def cert_file(self) -> Path:
        return self.directory / "sink.pem"

    @property
    def key_file(self) -> Path:
        return self.directory / "sink-key.pem"


@dataclass(frozen=True)
class SinkCertificate:
    files: LocalTlsFiles
    host_names: tuple[str, ...]
    not_after: datetime
    created_ca: bool  # a new CA: a worker that trusted the old one must be restarted
    issued: bool  # a new certificate for the sink (False: both reused as they were)


def certificate_names(host_names: Iterable[str]) -> tuple[str, ...]:
    """The names a certificate must hold, in order, once each; 0.0.0.0 and :: are no names."""
    names: list[str] = []
    for name in host_names:
        name = name.strip().strip("[]").lower()
        if name not in UNSPECIFIED_ADDRESSES and name not in names:
            names.append(name)
    return tuple(names)


def ensure_sink_certificate(
    directory: Path, host_names: Sequence[str], now: datetime | None = None
) -> SinkCertificate:
    """The CA and the sink's certificate in `directory`, reused while valid for `host_names`."""
    now = now or datetime.now(UTC)
    names = certificate_names(host_names)
    files = LocalTlsFiles(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = _read(files.ca_file, files.ca_key_file)
    created_ca = ca is None or not ca_is_usable(*ca, now)
    if ca is None or created_ca:
        ca = _new_ca(now)
        _write(files.ca_key_file, _key_pem(ca[1]), private=True)
        _write(files.ca_file, ca[0].public_bytes(serialization.Encoding.PEM))
    ca_cert, ca_key = ca
    cert = None if created_ca else _read(files.cert_file, files.key_file)
    if cert is not None and certificate_is_usable(*cert, ca_cert, names, now):
        return SinkCertificate(files, names, cert[0].not_valid_after_utc, created_ca, issued=False)
    sink_cert, sink_key = _new_sink_certificate(ca_cert, ca_key, names, now)
    _write(files.key_file, _key_pem(sink_key), private=True)
    _write(files.cert_file, sink_cert.public_bytes(serialization.Encoding.PEM))
    return SinkCertificate(files, names, sink_cert.not_valid_after_utc, created_ca, issued=True)


def ca_is_usable(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, now: datetime) -> bool:
    return (
        _is_ca(cert)
        and _same_key(cert, key)
        and cert.not_valid_before_utc <= now
        and now + CERT_VALIDITY + RENEW_BEFORE < cert.not_valid_after_utc
    )


def certificate_is_usable(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: Sequence[str],
    now: datetime,
) -> bool:
    """Signed by this CA, for this key, valid for a while yet, and naming every host name."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    try:
        alt_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return (
        _same_key(cert, key)
        and cert.not_valid_before_utc <= now
        and now + RENEW_BEFORE < cert.not_valid_after_utc
        and set(_general_names(names)) <= set(alt_names)
    )


def _new_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "email-pipeline make up"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"email-pipeline local CA {now:%Y-%m-%d}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_sink_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    now: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_names(names: Iterable[str]) -> list[x509.GeneralName]:
    general_names: list[x509.GeneralName] = []
    for name in names:
        try:
            general_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general_names.append(x509.DNSName(name))
    return general_names


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    return cert.public_key() == key.public_key()


def _read(
    cert_file: Path, key_file: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """A certificate and its key as we wrote them; None when either is missing or unreadable."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return (cert, key) if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, content: bytes, private: bool = False) -> None:
    """Whole or not at all (a reader never sees half a key), and a key is 0600 from the start."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    os.replace(partial, path)
