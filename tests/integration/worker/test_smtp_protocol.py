"""What services/worker/smtp_protocol.py relies on in aiosmtplib, held against the real sink
(which offers PIPELINING) in the clear, over STARTTLS and over TLS, on asyncio's loop and on
uvloop: `SMTP.transport` and `SMTP.protocol` are the open connection's, the transport moves to a
SessionProtocol that reads a pipelined group's replies in order, and the `SMTP` object closes when
the connection is lost. If aiosmtplib changes any of it, this fails."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
import uvloop
from aiosmtplib import SMTP
from aiosmtplib.protocol import SMTPProtocol

from services.worker.smtp_data import dot_stuffed
from services.worker.smtp_protocol import take_over
from tests.integration.smtp_sink.conftest import NOBODY, RunningSink, running_sink
from tests.mailpit import Certificate

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,  # the worker's (shared/event_loop.py)
}
MESSAGE = b"Subject: Taken over\r\n\r\n.a dot first\r\nlast line\r\n"


@pytest.fixture(scope="module")
def starttls_sink(
    tmp_path_factory: pytest.TempPathFactory, certificate: Certificate
) -> Iterator[RunningSink]:
    """STARTTLS offered, not required: in the clear too."""
    with running_sink(
        tmp_path_factory.mktemp("starttls"),
        SINK_TLS_CERT_FILE=str(certificate.cert_file),
        SINK_TLS_KEY_FILE=str(certificate.key_file),
        SINK_FAIL_5XX_RECIPIENTS=NOBODY,
    ) as sink:
        yield sink


@pytest.fixture(scope="module")
def tls_sink(
    tmp_path_factory: pytest.TempPathFactory, certificate: Certificate
) -> Iterator[RunningSink]:
    with running_sink(
        tmp_path_factory.mktemp("tls"),
        SINK_TLS_CERT_FILE=str(certificate.cert_file),
        SINK_TLS_KEY_FILE=str(certificate.key_file),
        SINK_TLS_IMPLICIT="true",
        SINK_FAIL_5XX_RECIPIENTS=NOBODY,
    ) as sink:
        yield sink


def run_on(loop: str, main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main)


async def opened(port: int, tls: str, context: ssl.SSLContext) -> SMTP:
    """As SmtpConnection opens a session: connected, EHLO, STARTTLS and EHLO again."""
    client = SMTP(
        hostname="127.0.0.1",
        port=port,
        timeout=5,
        use_tls=tls == "tls",
        start_tls=False,
        tls_context=context,
    )
    await client.connect()
    await client.ehlo()
    if tls == "starttls":
        await client.starttls()
        await client.ehlo()
    return client


async def a_pipelined_transaction(port: int, tls: str, context: ssl.SSLContext) -> None:
    client = await opened(port, tls, context)
    transport = client.transport
    assert transport is not None
    assert transport.get_protocol() is client.protocol, "SMTP.protocol reads the connection"
    assert isinstance(client.protocol, SMTPProtocol)
    assert (transport.get_extra_info("sslcontext") is not None) == (tls != "none")

    session = take_over(client)

    assert transport.get_protocol() is session
    assert session.pipelining
    session.send(
        b"MAIL FROM:<a@example.com>",
        b"RCPT TO:<b@example.com>",
        f"RCPT TO:<{NOBODY}>".encode(),
        b"DATA",
    )
    replies = [(await session.reply(5)).code for _ in range(4)]
    session.send_message(dot_stuffed(MESSAGE))
    final = await session.reply(5)
    await session.quit(5)
    for _ in range(500):  # the TLS close takes a moment
        if client.protocol is None:
            break
        await asyncio.sleep(0.01)

    assert replies == [250, 250, 550, 354]
    assert final.code == 250
    assert not client.is_connected
    assert client.protocol is None, "aiosmtplib was told the connection is gone, and closed"


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("tls", ["none", "starttls", "tls"])
def test_a_session_aiosmtplib_opened_is_taken_over_and_pipelined(
    loop: str,
    tls: str,
    starttls_sink: RunningSink,
    tls_sink: RunningSink,
    certificate: Certificate,
) -> None:
    sink = tls_sink if tls == "tls" else starttls_sink
    context = ssl.create_default_context(cafile=str(certificate.ca_file))
    httpx.delete(f"{sink.api}/api/v1/messages").raise_for_status()

    run_on(loop, a_pipelined_transaction(sink.smtp_port, tls, context))

    [summary] = httpx.get(f"{sink.api}/api/v1/messages").json()["messages"]
    stored = httpx.get(f"{sink.api}/api/v1/messages/{summary['ID']}").json()
    assert stored["Raw"] == MESSAGE.decode()


def test_the_smtp_attributes_relied_on_are_still_there_before_connecting() -> None:
    client = SMTP(hostname="127.0.0.1")

    assert (client.transport, client.protocol) == (None, None)
