"""The real sink's STARTTLS, implicit TLS and AUTH, spoken to by aiosmtplib with a trustme CA;
and the sink refusing to start, in one line, when those settings cannot work."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import httpx
import pytest
import trustme

from shared.settings import PROJECT_ROOT
from tests.conftest import free_port
from tests.integration.smtp_sink.conftest import RunningSink, email, running_sink

USER, PASSWORD = "pipeline", "s3cret:with a colon"
SENDER, RECIPIENT = "ann@example.com", "bob@example.com"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    auth: Path


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(
        ca=directory / "ca.pem",
        cert=directory / "sink.pem",
        key=directory / "sink-key.pem",
        auth=directory / "auth",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    server.private_key_pem.write_to_path(str(files.key))
    files.auth.write_text(f"# the worker\n{USER}:{PASSWORD}\nother:password\n")
    return files


@pytest.fixture(scope="module")
def client_context(tls_files: TlsFiles) -> ssl.SSLContext:
    """What the worker does: verify the sink's certificate and host name against the CA."""
    return ssl.create_default_context(cafile=str(tls_files.ca))


@pytest.fixture(scope="module")
def strict_sink(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[RunningSink]:
    """As `make up` over TLS starts it: STARTTLS required, then AUTH required."""
    with running_sink(
        tmp_path_factory.mktemp("strict"),
        SINK_TLS_CERT_FILE=str(tls_files.cert),
        SINK_TLS_KEY_FILE=str(tls_files.key),
        SINK_REQUIRE_STARTTLS="true",
        SINK_AUTH_FILE=str(tls_files.auth),
    ) as sink:
        yield sink


@pytest.fixture(scope="module")
def optional_tls_sink(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[RunningSink]:
    """STARTTLS offered, not required; AUTH required, and only after STARTTLS."""
    with running_sink(
        tmp_path_factory.mktemp("optional"),
        SINK_TLS_CERT_FILE=str(tls_files.cert),
        SINK_TLS_KEY_FILE=str(tls_files.key),
        SINK_AUTH_FILE=str(tls_files.auth),
    ) as sink:
        yield sink


async def stored_count(sink: RunningSink) -> int:
    async with httpx.AsyncClient(base_url=sink.api) as api:
        total: int = (await api.get("/api/v1/messages")).json()["total"]
        return total


async def empty(sink: RunningSink) -> None:
    async with httpx.AsyncClient(base_url=sink.api) as api:
        (await api.delete("/api/v1/messages")).raise_for_status()


@asynccontextmanager
async def plaintext_client(sink: RunningSink) -> AsyncIterator[aiosmtplib.SMTP]:
    """Connected, EHLO said, in the clear."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.smtp_port, start_tls=False)
    await client.connect()
    await client.ehlo()
    try:
        yield client
    finally:
        client.close()


@asynccontextmanager
async def tls_client(sink: RunningSink, context: ssl.SSLContext) -> AsyncIterator[aiosmtplib.SMTP]:
    """Connected, STARTTLS done (the certificate verified), EHLO said again; not yet AUTH."""
    async with plaintext_client(sink) as client:
        await client.starttls(tls_context=context)
        await client.ehlo()
        yield client


async def send_over_starttls(sink: RunningSink, context: ssl.SSLContext) -> None:
    """What the worker does with TLS and AUTH set: STARTTLS, verify, AUTH, send."""
    await aiosmtplib.send(
        email(),
        hostname="127.0.0.1",
        port=sink.smtp_port,
        start_tls=True,
        tls_context=context,
        username=USER,
        password=PASSWORD,
    )


async def test_starttls_is_offered_and_the_certificate_verifies_against_the_ca(
    strict_sink: RunningSink, client_context: ssl.SSLContext
) -> None:
    async with plaintext_client(strict_sink) as client:
        offered_in_the_clear = set(client.esmtp_extensions)
        await client.starttls(tls_context=client_context)
        await client.ehlo()
        peer_certificate = client.get_transport_info("peercert")
        offered_over_tls = client.esmtp_extensions

    assert "starttls" in offered_in_the_clear
    assert "auth" not in offered_in_the_clear, "no AUTH is offered before TLS"
    assert "starttls" not in offered_over_tls
    assert offered_over_tls["auth"].split() == ["LOGIN", "PLAIN"]
    assert ("DNS", "localhost") in peer_certificate["subjectAltName"]


async def test_a_client_that_does_not_trust_the_ca_cannot_start_tls(
    strict_sink: RunningSink,
) -> None:
    async with plaintext_client(strict_sink) as client:
        with pytest.raises(ssl.SSLCertVerificationError):
            await client.starttls(tls_context=ssl.create_default_context())


async def test_mail_before_starttls_gets_530_when_starttls_is_required(
    strict_sink: RunningSink,
) -> None:
    async with plaintext_client(strict_sink) as client:
        reply = await client.execute_command(b"MAIL", f"FROM:<{SENDER}>".encode())

    assert (reply.code, reply.message) == (530, "Must issue a STARTTLS command first")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_the_right_password_is_235_and_the_message_is_stored(
    strict_sink: RunningSink, client_context: ssl.SSLContext, mechanism: str
) -> None:
    await empty(strict_sink)
    async with tls_client(strict_sink, client_context) as client:
        auth = client.auth_plain if mechanism == "PLAIN" else client.auth_login
        authenticated = await auth(USER, PASSWORD)
        _, data_reply = await client.send_message(email(subject=f"over TLS, {mechanism}"))

    assert authenticated.code == 235
    assert data_reply.startswith("2.0.0 OK stored as ")
    assert await stored_count(strict_sink) == 1


@pytest.mark.parametrize(
    ("user", "password"), [(USER, "wrong"), (USER, PASSWORD + "x"), ("stranger", PASSWORD)]
)
async def test_a_wrong_user_or_password_is_535_and_nothing_is_stored(
    strict_sink: RunningSink, client_context: ssl.SSLContext, user: str, password: str
) -> None:
    await empty(strict_sink)
    async with tls_client(strict_sink, client_context) as client:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
            await client.auth_plain(user, password)
        mail_reply = await client.execute_command(b"MAIL", f"FROM:<{SENDER}>".encode())

    assert (refused.value.code, refused.value.message) == (
        535,
        "5.7.8 Authentication credentials invalid",
    )
    assert mail_reply.code == 530
    assert await stored_count(strict_sink) == 0
    assert f"AUTH PLAIN refused for {user!r} from 127.0.0.1" in strict_sink.output()
    assert password not in strict_sink.output(), "a refused password is never logged"


async def test_mail_without_auth_gets_530_when_auth_is_required(
    strict_sink: RunningSink, client_context: ssl.SSLContext
) -> None:
    async with tls_client(strict_sink, client_context) as client:
        reply = await client.execute_command(b"MAIL", f"FROM:<{SENDER}>".encode())

    assert (reply.code, reply.message) == (530, "5.7.0 Authentication required")


async def test_auth_in_the_clear_is_refused_when_tls_is_configured(
    optional_tls_sink: RunningSink,
) -> None:
    await empty(optional_tls_sink)
    async with plaintext_client(optional_tls_sink) as client:
        offered = set(client.esmtp_extensions)
        auth_reply = await client.execute_command(b"AUTH", b"PLAIN")
        mail_reply = await client.execute_command(b"MAIL", f"FROM:<{SENDER}>".encode())

    assert "auth" not in offered
    assert (auth_reply.code, auth_reply.message) == (
        538,
        "5.7.11 Encryption required for requested authentication mechanism",
    )
    assert mail_reply.code == 530
    assert await stored_count(optional_tls_sink) == 0


async def test_optional_starttls_then_auth_delivers(
    optional_tls_sink: RunningSink, client_context: ssl.SSLContext
) -> None:
    await empty(optional_tls_sink)

    await send_over_starttls(optional_tls_sink, client_context)

    assert await stored_count(optional_tls_sink) == 1


@pytest.mark.parametrize("reply_delay_ms", ["0", "50"])  # 50: every reply late, TLS's too
async def test_implicit_tls_with_auth_delivers(
    tmp_path: Path, tls_files: TlsFiles, client_context: ssl.SSLContext, reply_delay_ms: str
) -> None:
    with running_sink(
        tmp_path,
        SINK_TLS_CERT_FILE=str(tls_files.cert),
        SINK_TLS_KEY_FILE=str(tls_files.key),
        SINK_TLS_IMPLICIT="true",
        SINK_AUTH_FILE=str(tls_files.auth),
        SINK_REPLY_DELAY_MS=reply_delay_ms,
    ) as sink:
        _, reply = await aiosmtplib.send(
            email(),
            hostname="127.0.0.1",
            port=sink.smtp_port,
            use_tls=True,
            tls_context=client_context,
            username=USER,
            password=PASSWORD,
        )

        assert reply.startswith("2.0.0 OK stored as ")
        assert await stored_count(sink) == 1
        assert "implicit TLS on every connection" in sink.output()


async def test_starttls_and_auth_work_and_fail_as_usual_with_every_reply_late(
    tmp_path: Path, tls_files: TlsFiles, client_context: ssl.SSLContext
) -> None:
    """SINK_REPLY_DELAY_MS: the TLS handshake after STARTTLS goes out late too, beneath TLS."""
    with running_sink(
        tmp_path,
        SINK_TLS_CERT_FILE=str(tls_files.cert),
        SINK_TLS_KEY_FILE=str(tls_files.key),
        SINK_REQUIRE_STARTTLS="true",
        SINK_AUTH_FILE=str(tls_files.auth),
        SINK_REPLY_DELAY_MS="50",
    ) as sink:
        await send_over_starttls(sink, client_context)
        async with plaintext_client(sink) as client:
            with pytest.raises(ssl.SSLCertVerificationError):
                await client.starttls(tls_context=ssl.create_default_context())
        async with tls_client(sink, client_context) as client:
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.login(USER, "wrong")
            await client.quit()

        assert await stored_count(sink) == 1
    # running_sink: it stopped with exit status 0 and without a traceback


async def test_auth_without_tls_is_offered_in_the_clear(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    """No certificate: an auth file alone is AUTH over plaintext (the client decides)."""
    with running_sink(tmp_path, SINK_AUTH_FILE=str(tls_files.auth)) as sink:
        _, reply = await aiosmtplib.send(
            email(),
            hostname="127.0.0.1",
            port=sink.smtp_port,
            start_tls=False,
            username=USER,
            password=PASSWORD,
        )

        assert reply.startswith("2.0.0 OK stored as ")
        assert "AUTH required (PLAIN, LOGIN; 2 users), over plaintext" in sink.output()


async def test_the_sink_says_once_at_start_what_it_offers(
    strict_sink: RunningSink, client_context: ssl.SSLContext
) -> None:
    for _ in range(3):
        await send_over_starttls(strict_sink, client_context)

    output = strict_sink.output()
    assert output.count("STARTTLS offered (required)") == 1
    assert output.count("AUTH required (PLAIN, LOGIN; 2 users), after STARTTLS only") == 1
    assert "deprecated" not in output, "aiosmtpd's per-session warnings are not repeated"
    assert PASSWORD not in output


def start_with(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RUN_DIR": str(tmp_path),
        "SINK_HOST": "127.0.0.1",
        "SINK_SMTP_PORT": str(free_port()),
        "SINK_HTTP_PORT": str(free_port()),
        **settings,
    }
    return subprocess.run(
        [sys.executable, "-m", "services.smtp_sink"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def misconfigurations(files: TlsFiles, tmp_path: Path) -> dict[str, tuple[dict[str, str], str]]:
    """name -> (settings, the one line the sink exits with)."""
    missing = tmp_path / "missing.pem"
    malformed = tmp_path / "malformed-auth"
    malformed.write_text(f"{USER}:{PASSWORD}\njust-a-name\n")
    empty_auth = tmp_path / "empty-auth"
    empty_auth.write_text("# nobody yet\n")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    other_key = tmp_path / "other-key.pem"
    trustme.CA().issue_cert("localhost").private_key_pem.write_to_path(str(other_key))
    cert, key = str(files.cert), str(files.key)
    return {
        "cert without key": (
            {"SINK_TLS_CERT_FILE": cert},
            f"smtp_sink: SINK_TLS_CERT_FILE={cert} needs SINK_TLS_KEY_FILE, its private key",
        ),
        "key without cert": (
            {"SINK_TLS_KEY_FILE": key},
            f"smtp_sink: SINK_TLS_KEY_FILE={key} needs SINK_TLS_CERT_FILE, its certificate",
        ),
        "unreadable cert": (
            {"SINK_TLS_CERT_FILE": str(missing), "SINK_TLS_KEY_FILE": key},
            f"smtp_sink: SINK_TLS_CERT_FILE={missing}: No such file or directory",
        ),
        "not a certificate": (
            {"SINK_TLS_CERT_FILE": str(not_pem), "SINK_TLS_KEY_FILE": key},
            f"smtp_sink: SINK_TLS_CERT_FILE={not_pem}: no PEM certificate in it",
        ),
        "not a key": (
            {"SINK_TLS_CERT_FILE": cert, "SINK_TLS_KEY_FILE": str(not_pem)},
            f"smtp_sink: SINK_TLS_KEY_FILE={not_pem}: no PEM private key in it",
        ),
        "another certificate's key": (
            {"SINK_TLS_CERT_FILE": cert, "SINK_TLS_KEY_FILE": str(other_key)},
            f"smtp_sink: SINK_TLS_KEY_FILE={other_key} is not the key of "
            f"SINK_TLS_CERT_FILE={cert}: KEY_VALUES_MISMATCH",
        ),
        "require_starttls without a cert": (
            {"SINK_REQUIRE_STARTTLS": "true"},
            "smtp_sink: SINK_REQUIRE_STARTTLS=true needs SINK_TLS_CERT_FILE and SINK_TLS_KEY_FILE",
        ),
        "implicit TLS without a cert": (
            {"SINK_TLS_IMPLICIT": "true"},
            "smtp_sink: SINK_TLS_IMPLICIT=true needs SINK_TLS_CERT_FILE and SINK_TLS_KEY_FILE",
        ),
        "unreadable auth file": (
            {"SINK_AUTH_FILE": str(missing)},
            f"smtp_sink: SINK_AUTH_FILE={missing}: No such file or directory",
        ),
        "malformed auth line": (
            {"SINK_AUTH_FILE": str(malformed)},
            f"smtp_sink: SINK_AUTH_FILE={malformed}: line 2 is not username:password",
        ),
        "auth file without users": (
            {"SINK_AUTH_FILE": str(empty_auth)},
            f"smtp_sink: SINK_AUTH_FILE={empty_auth}: it names no user",
        ),
    }


MISCONFIGURATIONS = [
    "cert without key",
    "key without cert",
    "unreadable cert",
    "not a certificate",
    "not a key",
    "another certificate's key",
    "require_starttls without a cert",
    "implicit TLS without a cert",
    "unreadable auth file",
    "malformed auth line",
    "auth file without users",
]


@pytest.mark.parametrize("case", MISCONFIGURATIONS)
def test_a_misconfiguration_stops_the_sink_at_start_with_one_line(
    tmp_path: Path, tls_files: TlsFiles, case: str
) -> None:
    settings, line = misconfigurations(tls_files, tmp_path)[case]

    result = start_with(tmp_path, **settings)

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == line + "\n"
    assert "SMTP sink: SMTP on" not in result.stdout, "it never started listening"
    assert PASSWORD not in result.stderr
