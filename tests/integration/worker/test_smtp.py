"""The worker's SMTP connection against a real aiosmtpd: reused, and reopened after a loss; a
server that refuses the session before any email is a configuration fault; one that cannot be
reached, is busy or drops the connection before MAIL FROM is answered is unavailable (the relay's
fault, no email's), and a connection lost after it is the email's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from aiosmtplib import (
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from services.worker import metrics
from services.worker.mime import OutgoingEmail, render_email
from services.worker.smtp import SmtpConnection, SmtpServer
from services.worker.smtp_failures import ConfigurationFault, RelayUnavailable
from tests.conftest import free_port
from tests.unit.worker.fakes import email_record


class CountingSink(Sink):
    def __init__(self) -> None:
        self.received = 0
        self.sessions: set[int] = set()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.received += 1
        self.sessions.add(id(session))
        return "250 OK"


@pytest.fixture
def port() -> int:
    return free_port()


def smtp_server(port: int, handler: CountingSink) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.fixture
def sink(port: int) -> Iterator[CountingSink]:
    handler = CountingSink()
    controller = smtp_server(port, handler)
    yield handler
    controller.stop()


def message(subject: str) -> OutgoingEmail:
    return render_email(email_record(subject), "pipeline.test")


ANA = ["ana@example.com"]


async def test_one_connection_carries_many_emails(port: int, sink: CountingSink) -> None:
    connection = SmtpConnection(SmtpServer("127.0.0.1", port, timeout_seconds=5))

    for n in range(3):
        assert (await connection.send(message(f"m{n}"), ANA)).refused == {}
    await connection.close()

    assert sink.received == 3
    assert len(sink.sessions) == 1


async def test_a_lost_connection_fails_once_then_reopens(port: int) -> None:
    first_server = CountingSink()
    controller = smtp_server(port, first_server)
    connection = SmtpConnection(SmtpServer("127.0.0.1", port, timeout_seconds=5))
    await connection.send(message("before"), ANA)
    controller.stop()
    second_server = CountingSink()
    controller = smtp_server(port, second_server)
    try:
        with pytest.raises(Exception):  # noqa: B017, PT011 - whichever way the loss shows
            await connection.send(message("lost"), ANA)
        await connection.send(message("after"), ANA)
    finally:
        await connection.close()
        controller.stop()

    assert (first_server.received, second_server.received) == (1, 1)


async def test_a_refused_connection_is_the_relay_unavailable() -> None:
    port = free_port()
    connection = SmtpConnection(SmtpServer("127.0.0.1", port, timeout_seconds=2))

    with pytest.raises(RelayUnavailable) as unavailable:
        await connection.send(message("nobody-there"), ANA)

    assert str(unavailable.value).startswith(f"127.0.0.1:{port}: ")
    assert isinstance(unavailable.value.__cause__, OSError)


class Refusing(CountingSink):
    """Refuses recipients named `no...` for good, and senders named `blocked...`."""

    async def handle_MAIL(
        self, server: object, session: object, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("blocked"):
            return "550 5.7.1 sender blocked"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(
        self, server: object, session: object, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("no"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_refused_recipients_are_returned_and_the_rest_delivered(port: int) -> None:
    handler = Refusing()
    controller = smtp_server(port, handler)
    connection = SmtpConnection(SmtpServer("127.0.0.1", port, timeout_seconds=5))
    email = render_email(email_record("partly", to=["ana@example.com", "nobody@example.com"]), "t")
    blocked = render_email(email_record("blocked", **{"from": "blocked@example.com"}), "t")
    try:
        refused = (await connection.send(email, email.recipients)).refused
        with pytest.raises(SMTPRecipientsRefused) as every_one:
            await connection.send(email, ["nobody@example.com"])
        with pytest.raises(SMTPSenderRefused):
            await connection.send(blocked, blocked.recipients)
    finally:
        await connection.close()
        controller.stop()

    assert list(refused) == ["nobody@example.com"]
    assert refused["nobody@example.com"].code == 550
    assert [r.code for r in every_one.value.recipients] == [550]
    assert handler.received == 1


def timed_transactions() -> float:
    """email_worker_delivery_duration_seconds_count, as the worker's /metrics shows it."""
    [histogram] = metrics.DELIVERY_DURATION.collect()
    return next(sample.value for sample in histogram.samples if sample.name.endswith("_count"))


async def test_only_the_transactions_the_server_took_are_timed(port: int) -> None:
    controller = smtp_server(port, Refusing())
    connection = SmtpConnection(SmtpServer("127.0.0.1", port, timeout_seconds=5))
    email = render_email(email_record("timed", to=["ana@example.com", "nobody@example.com"]), "t")
    before = timed_transactions()
    try:
        await connection.send(email, email.recipients)
        await connection.send(email, ["ana@example.com"])
        with pytest.raises(SMTPRecipientsRefused):
            await connection.send(email, ["nobody@example.com"])
    finally:
        await connection.close()
        controller.stop()

    assert timed_transactions() == before + 2


async def envelope_received(port: int, email: OutgoingEmail, smtputf8: bool) -> Any:
    """Send `email` to an aiosmtpd that offers SMTPUTF8 or not; the one envelope it received."""
    received: list[Any] = []

    class Keeping(CountingSink):
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            received.append(envelope)
            return "250 OK"

    controller = Controller(Keeping(), hostname="127.0.0.1", port=port, enable_SMTPUTF8=smtputf8)
    controller.start()
    connection = SmtpConnection(SmtpServer("127.0.0.1", port, timeout_seconds=5))
    try:
        assert (await connection.send(email, email.recipients)).refused == {}
    finally:
        await connection.close()
        controller.stop()
    [envelope] = received
    return envelope


async def test_a_mailbox_beyond_ascii_travels_with_smtputf8(port: int) -> None:
    email = render_email(email_record("utf8", to=["José <josé@example.com>"]), "t")

    envelope = await envelope_received(port, email, smtputf8=True)

    assert email.smtputf8
    assert envelope.rcpt_tos == ["josé@example.com"]
    assert "SMTPUTF8" in envelope.mail_options


async def greeting_server(port: int, greeting: bytes) -> asyncio.Server:
    """A server that answers every connection with `greeting` and nothing more."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        await reader.read()
        writer.close()

    return await asyncio.start_server(greet, "127.0.0.1", port)


async def test_a_session_refused_before_any_email_is_a_configuration_fault(port: int) -> None:
    server = await greeting_server(port, b"554 5.7.1 no SMTP service for you\r\n")
    connection = SmtpConnection(SmtpServer("127.0.0.1", port, timeout_seconds=5))
    try:
        with pytest.raises(ConfigurationFault) as refused:
            await connection.send(message("refused-session"), ANA)
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()

    assert refused.value.kind == "session_refused"
    assert str(refused.value) == (
        f"127.0.0.1:{port} refused the session before any email (554 5.7.1 no SMTP service for "
        "you); check SMTP_HOST and SMTP_PORT"
    )


async def test_a_busy_server_at_greeting_is_unavailable_not_a_fault(port: int) -> None:
    server = await greeting_server(port, b"421 4.3.2 too busy, try later\r\n")
    connection = SmtpConnection(SmtpServer("127.0.0.1", port, timeout_seconds=5))
    try:
        with pytest.raises(RelayUnavailable) as busy:
            await connection.send(message("busy"), ANA)
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()

    assert isinstance(busy.value.__cause__, SMTPResponseException)
    assert busy.value.__cause__.code == 421


async def server_closing_at(port: int, command: bytes) -> asyncio.Server:
    """A server that greets, answers EHLO and each command with a 250, and closes the
    connection when it reads `command` (a relay restarting, an idle connection dropped)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay.test ESMTP\r\n")
        while line := await reader.readline():
            if line.upper().startswith(command):
                break
            writer.write(b"250 OK\r\n")
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", port)


@pytest.mark.parametrize(
    ("command", "raised"),
    [
        pytest.param(b"MAIL", RelayUnavailable, id="before_mail_from_is_answered"),
        pytest.param(b"RCPT", SMTPServerDisconnected, id="after_mail_from_is_answered"),
    ],
)
async def test_a_connection_lost_is_the_relays_only_until_mail_from_is_answered(
    port: int, command: bytes, raised: type[Exception]
) -> None:
    server = await server_closing_at(port, command)
    connection = SmtpConnection(SmtpServer("127.0.0.1", port, timeout_seconds=5))
    try:
        with pytest.raises(raised) as lost:
            await connection.send(message("lost"), ANA)
    finally:
        await connection.close()
        server.close()
        await server.wait_closed()

    assert isinstance(lost.value, RelayUnavailable) == (raised is RelayUnavailable)


async def test_an_international_domain_travels_without_smtputf8(port: int) -> None:
    """An ASCII local part at an IDN domain goes out with the domain in A-labels: a relay
    without SMTPUTF8 takes it, instead of the email being dead-lettered after its 202."""
    email = render_email(email_record("idn", to=["Иван <info@пример.рф>"]), "t")

    envelope = await envelope_received(port, email, smtputf8=False)

    assert not email.smtputf8
    assert envelope.rcpt_tos == ["info@xn--e1afmkfd.xn--p1ai"]
    assert "SMTPUTF8" not in envelope.mail_options
    assert b"To: =?utf-8?" in envelope.original_content
    assert b"<info@xn--e1afmkfd.xn--p1ai>" in envelope.original_content
