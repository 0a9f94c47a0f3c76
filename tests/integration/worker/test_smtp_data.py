"""DATA's two waits against a real aiosmtpd: a slow reply to the final "." is waited for as
RFC 5321 allows, and one that never comes is an unknown outcome, not a plain failure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.worker.mime import render_email
from services.worker.smtp import SmtpConnection, SmtpServer
from services.worker.smtp_failures import OutcomeUnknown, classify
from tests.conftest import free_port
from tests.unit.worker.fakes import email_record

ANA = ["ana@example.com"]


class SlowToConfirm:
    """Stores each message at once, then waits `seconds` before its 250 (or drops the line)."""

    def __init__(self, seconds: float, drop: bool = False) -> None:
        self.seconds = seconds
        self.drop = drop
        self.stored: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.stored.append(envelope.original_content)
        await asyncio.sleep(self.seconds)
        if self.drop:
            server.transport.close()
        return "250 OK"


@pytest.fixture
def port() -> int:
    return free_port()


def server(port: int, data_end_timeout: float) -> SmtpServer:
    return SmtpServer(
        "127.0.0.1",
        port,
        timeout_seconds=0.2,
        command_timeout_seconds=0.2,
        data_timeout_seconds=0.2,
        data_end_timeout_seconds=data_end_timeout,
    )


async def test_a_slow_reply_to_the_final_dot_is_waited_for_past_the_command_timeout(
    port: int,
) -> None:
    handler = serve_in_background(port, SlowToConfirm(seconds=0.8))
    connection = SmtpConnection(server(port, data_end_timeout=5))

    transaction = await connection.send(render_email(email_record("m-1"), "pipeline.test"), ANA)

    assert transaction.refused == {}
    assert len(handler.stored) == 1
    assert not connection.awaiting_final_reply
    await connection.close()


async def test_no_reply_to_the_final_dot_in_time_is_an_unknown_outcome(port: int) -> None:
    handler = serve_in_background(port, SlowToConfirm(seconds=1.0))
    connection = SmtpConnection(server(port, data_end_timeout=0.3))

    with pytest.raises(OutcomeUnknown) as raised:
        await connection.send(render_email(email_record("m-1"), "pipeline.test"), ANA)

    assert len(handler.stored) == 1, "the server did store it: a retry would deliver it twice"
    assert classify(raised.value).outcome_unknown
    assert "SMTP_DATA_END_TIMEOUT_SECONDS" in str(raised.value)
    await connection.close()


async def test_a_connection_lost_after_the_final_dot_is_an_unknown_outcome(port: int) -> None:
    handler = serve_in_background(port, SlowToConfirm(seconds=0.05, drop=True))
    connection = SmtpConnection(server(port, data_end_timeout=5))

    with pytest.raises(OutcomeUnknown):
        await connection.send(render_email(email_record("m-1"), "pipeline.test"), ANA)

    assert len(handler.stored) == 1


async def test_the_message_arrives_exactly_as_rendered(port: int) -> None:
    handler = serve_in_background(port, SlowToConfirm(seconds=0))
    connection = SmtpConnection(server(port, data_end_timeout=5))
    email = render_email(
        email_record("m-1", text=".a dot first\n..two\nlast line without an end"), "pipeline.test"
    )

    await connection.send(email, ANA)

    assert handler.stored == [email.data]
    await connection.close()


_controllers: list[Controller] = []


def serve_in_background(port: int, handler: SlowToConfirm) -> SlowToConfirm:
    """aiosmtpd in a thread of its own; stopped after the test."""
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    _controllers.append(controller)
    return handler


@pytest.fixture(autouse=True)
def _stop_servers() -> Iterator[None]:
    yield
    while _controllers:
        _controllers.pop().stop()
