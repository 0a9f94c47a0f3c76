"""The worker's SMTP edge against the real sink, which offers PIPELINING (RFC 2920), its every
reply 100 ms late as a remote relay's: one email over an open connection takes two round trips,
not four; the email stored is the same, byte for byte, as one sent a command at a time; refused
recipients keep their place; and over STARTTLS with AUTH, on uvloop, the same.

Timings are held to bounds far apart on a busy machine: at least the two delays the sink must
wait, less than three (four when each command waits for its reply)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiosmtplib
import httpx
import pytest
import uvloop
from aiosmtplib import SMTPRecipientsRefused, SMTPResponseException
from pydantic import SecretStr

from services.worker.mime import OutgoingEmail, render_email
from services.worker.smtp import SmtpConnection, SmtpServer, tls_context
from services.worker.smtp_failures import throttling_reply
from tests.integration.smtp_sink.conftest import NOBODY, RunningSink, running_sink
from tests.mailpit import Certificate
from tests.unit.worker.fakes import email_record

DELAY_MS = 100
DELAY = DELAY_MS / 1000
EARLY = 0.01  # how much sooner than its delay a reply may come: the loop's clock resolution
ANA, BOB = "ana@example.com", "bob@example.com"
USER, PASSWORD = "worker", "s3cret"


@pytest.fixture(scope="module")
def far_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
    with running_sink(
        tmp_path_factory.mktemp("far"),
        SINK_REPLY_DELAY_MS=str(DELAY_MS),
        SINK_FAIL_5XX_RECIPIENTS=NOBODY,
    ) as sink:
        yield sink


@pytest.fixture
def far(far_sink: RunningSink) -> RunningSink:
    httpx.delete(f"{far_sink.api}/api/v1/messages").raise_for_status()
    return far_sink


def connection_to(sink: RunningSink) -> SmtpConnection:
    return SmtpConnection(SmtpServer("127.0.0.1", sink.smtp_port, timeout_seconds=5))


def an_email(*to: str, text: str = "hello") -> OutgoingEmail:
    record = email_record(f"pipelined-{uuid.uuid4().hex[:8]}", to=list(to), text=text)
    return render_email(record, "pipeline.test")


def stored(sink: RunningSink) -> list[dict[str, Any]]:
    """Every stored message in full (source included), oldest first."""
    summaries = httpx.get(f"{sink.api}/api/v1/messages").json()["messages"]
    return [httpx.get(f"{sink.api}/api/v1/messages/{m['ID']}").json() for m in reversed(summaries)]


async def test_one_email_over_an_open_connection_takes_two_round_trips(far: RunningSink) -> None:
    connection = connection_to(far)
    emails = [an_email(ANA, BOB) for _ in range(4)]
    took = []
    try:
        await connection.send(emails[0], emails[0].recipients)  # opens the connection
        for email in emails[1:]:
            started = time.monotonic()
            transaction = await connection.send(email, email.recipients)
            took.append(time.monotonic() - started)
            assert transaction.refused == {}
    finally:
        await connection.close()

    assert min(took) >= 2 * (DELAY - EARLY), f"MAIL, RCPT and DATA, then the message: {took}"
    assert min(took) < 3 * DELAY, f"a round trip a command: {took}"
    assert len(stored(far)) == 4


async def test_the_stored_email_is_the_same_as_one_sent_a_command_at_a_time(
    far: RunningSink,
) -> None:
    email = an_email(ANA, BOB, text=".a dot first\n..two\nno line end at the end")
    connection = connection_to(far)
    try:
        await connection.send(email, email.recipients)
    finally:
        await connection.close()
    # aiosmtplib waits for each reply.
    await aiosmtplib.send(
        email.data, sender=email.sender, recipients=email.recipients, port=far.smtp_port,
        hostname="127.0.0.1",
    )  # fmt: skip

    pipelined, one_at_a_time = stored(far)
    assert pipelined["Raw"] == one_at_a_time["Raw"] == email.data.decode()


async def test_a_refused_recipients_reply_keeps_its_place_in_the_group(far: RunningSink) -> None:
    email = an_email(ANA, NOBODY, BOB)
    connection = connection_to(far)
    try:
        transaction = await connection.send(email, email.recipients)
    finally:
        await connection.close()

    assert list(transaction.refused) == [NOBODY]
    assert transaction.refused[NOBODY].code == 550
    [message] = stored(far)
    assert [to["Address"] for to in message["To"]] == [ANA, NOBODY, BOB]  # the header's
    assert transaction.reply.message.startswith("2.0.0 OK stored as ")


async def test_every_recipient_refused_sends_nothing_and_the_next_email_goes(
    far: RunningSink,
) -> None:
    """The refused transaction is reset (RSET), and the next email takes the same connection."""
    refused_email, next_email = an_email(NOBODY), an_email(ANA)
    connection = connection_to(far)
    try:
        with pytest.raises(SMTPRecipientsRefused) as refused:
            await connection.send(refused_email, refused_email.recipients)
        assert connection.is_open
        started = time.monotonic()
        await connection.send(next_email, next_email.recipients)
        took = time.monotonic() - started
    finally:
        await connection.close()

    assert [r.code for r in refused.value.recipients] == [550]
    assert len(stored(far)) == 1
    assert took < 3 * DELAY, "two round trips: no greeting, no EHLO"


async def test_a_421_in_the_group_refuses_the_transaction_and_asks_to_slow_down(
    far: RunningSink,
) -> None:
    """ratelimited@ takes 5 in any second, then 421 and the sink hangs up (docs/sink.md)."""
    limited = [f"ratelimited+{uuid.uuid4().hex}@simulator.example.com" for _ in range(6)]
    email = an_email(*limited)
    connection = connection_to(far)
    try:
        with pytest.raises(SMTPResponseException) as refused:
            await connection.send(email, email.recipients)
    finally:
        await connection.close()

    assert refused.value.code == 421
    assert throttling_reply(refused.value) is not None
    assert stored(far) == []


@pytest.fixture(scope="module")
def secure_sink(
    tmp_path_factory: pytest.TempPathFactory, certificate: Certificate
) -> Iterator[RunningSink]:
    """STARTTLS and AUTH required, as `SMTP_TLS=starttls make up` starts the sink."""
    directory = tmp_path_factory.mktemp("secure")
    auth_file = directory / "auth"
    auth_file.write_text(f"{USER}:{PASSWORD}\n")
    with running_sink(
        directory,
        SINK_TLS_CERT_FILE=str(certificate.cert_file),
        SINK_TLS_KEY_FILE=str(certificate.key_file),
        SINK_REQUIRE_STARTTLS="true",
        SINK_AUTH_FILE=str(auth_file),
    ) as sink:
        yield sink


def test_over_starttls_with_auth_on_uvloop(
    secure_sink: RunningSink, certificate: Certificate
) -> None:
    server = SmtpServer(
        "127.0.0.1",
        secure_sink.smtp_port,
        timeout_seconds=5,
        tls="starttls",
        tls_context=tls_context(certificate.ca_file),
        username=USER,
        password=SecretStr(PASSWORD),
    )
    emails = [an_email(ANA, BOB) for _ in range(3)]

    async def send_all() -> None:
        connection = SmtpConnection(server)
        try:
            for email in emails:
                assert (await connection.send(email, email.recipients)).refused == {}
        finally:
            await connection.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(send_all())

    assert [message["Raw"] for message in stored(secure_sink)] == [e.data.decode() for e in emails]
