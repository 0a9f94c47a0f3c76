"""The local CA of `make up` over TLS: the sink's certificate verifies against it for each host
name (an in-memory TLS handshake, as the worker's), keys are the owner's only, files are reused."""

from __future__ import annotations

import contextlib
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deploy.local.tls import (
    CA_VALIDITY,
    CERT_VALIDITY,
    LocalTlsFiles,
    certificate_names,
    ensure_sink_certificate,
)

NOW = datetime.now(UTC).replace(microsecond=0)
NAMES = ["localhost", "127.0.0.1", "sink.internal"]


def handshake(
    files: LocalTlsFiles, server_hostname: str, client_context: ssl.SSLContext | None = None
) -> None:
    """A TLS handshake between the worker's kind of client (trusting the local CA unless told
    otherwise) and the sink's kind of server, through memory: raises as a connection would."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files.cert_file, files.key_file)
    client_context = client_context or ssl.create_default_context(cafile=str(files.ca_file))
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=server_hostname)
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    finished: set[str] = set()
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
                finished.add(name)
        if finished == {"client", "server"}:
            return
    raise AssertionError("the handshake did not finish")


def test_the_sinks_certificate_verifies_against_the_ca_for_each_host_name(tmp_path: Path) -> None:
    issued = ensure_sink_certificate(tmp_path / "tls", NAMES)

    for name in ["localhost", "127.0.0.1", "sink.internal"]:
        handshake(issued.files, name)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        handshake(issued.files, "elsewhere.example")
    assert issued.created_ca
    assert issued.issued


def test_a_client_that_trusts_only_the_system_cas_refuses_the_certificate(tmp_path: Path) -> None:
    files = ensure_sink_certificate(tmp_path / "tls", NAMES).files

    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(files, "localhost", ssl.create_default_context())


def test_private_keys_are_the_owners_only(tmp_path: Path) -> None:
    files = ensure_sink_certificate(tmp_path / "tls", NAMES).files

    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.ca_key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.directory.stat().st_mode) == 0o700
    assert not list(files.directory.glob(".*partial")), "no half-written file is left"


def contents(files: LocalTlsFiles) -> dict[str, bytes]:
    paths = [files.ca_file, files.ca_key_file, files.cert_file, files.key_file]
    return {path.name: path.read_bytes() for path in paths}


def test_files_still_valid_are_reused_as_they_are(tmp_path: Path) -> None:
    first = ensure_sink_certificate(tmp_path / "tls", NAMES, NOW)
    before = contents(first.files)

    again = ensure_sink_certificate(tmp_path / "tls", NAMES, NOW + timedelta(days=300))

    assert (again.created_ca, again.issued) == (False, False)
    assert contents(again.files) == before


def test_a_new_host_name_gets_a_new_certificate_from_the_same_ca(tmp_path: Path) -> None:
    first = ensure_sink_certificate(tmp_path / "tls", NAMES, NOW)
    ca_before = first.files.ca_file.read_bytes()

    again = ensure_sink_certificate(tmp_path / "tls", [*NAMES, "10.0.0.7"], NOW)

    assert (again.created_ca, again.issued) == (False, True)
    assert again.files.ca_file.read_bytes() == ca_before
    handshake(again.files, "10.0.0.7")


def test_a_certificate_about_to_expire_is_renewed(tmp_path: Path) -> None:
    ensure_sink_certificate(tmp_path / "tls", NAMES, NOW)

    later = NOW + CERT_VALIDITY - timedelta(days=3)
    again = ensure_sink_certificate(tmp_path / "tls", NAMES, later)

    assert (again.created_ca, again.issued) == (False, True)
    assert again.not_after == later.replace(microsecond=0) + CERT_VALIDITY


def test_a_ca_that_would_not_outlive_a_new_certificate_is_replaced(tmp_path: Path) -> None:
    ensure_sink_certificate(tmp_path / "tls", NAMES, NOW)

    again = ensure_sink_certificate(tmp_path / "tls", NAMES, NOW + CA_VALIDITY - CERT_VALIDITY)

    assert (again.created_ca, again.issued) == (True, True)


def test_a_damaged_key_is_replaced_with_a_new_certificate(tmp_path: Path) -> None:
    files = ensure_sink_certificate(tmp_path / "tls", NAMES, NOW).files
    files.key_file.write_text("not a key\n")

    again = ensure_sink_certificate(tmp_path / "tls", NAMES, NOW)

    assert (again.created_ca, again.issued) == (False, True)
    handshake(again.files, "localhost")


def test_certificate_names_are_each_named_once_and_never_the_any_address() -> None:
    names = certificate_names(["localhost", "127.0.0.1", "0.0.0.0", "LOCALHOST", "[::1]", "::"])

    assert names == ("localhost", "127.0.0.1", "::1")
