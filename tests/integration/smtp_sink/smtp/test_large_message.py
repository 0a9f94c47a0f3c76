"""A 10 MB message on the real sink: while it is received, read, indexed and stored, the sink's
event loop goes on answering its HTTP API and the other SMTP sessions within a fraction of a
second (one loop serves them all, so any long piece of work on it would hold them up)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import aiosmtplib
import httpx
import pytest

from tests.integration.smtp_sink.conftest import RunningSink, running_sink

MESSAGE_BYTES = 10 * 1024 * 1024 - 64 * 1024  # just under the default SINK_MAX_MESSAGE_BYTES
MOST_WAIT_SECONDS = 0.25
# Lines that end in a dot, as prose does: the sink reads such a section a line at a time.
TEXT_LINE = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
HTML_LINE = b"<p>The quick <b>brown</b> fox jumps over the <i>lazy</i> dog &amp; again.</p>\r\n"
BODIES = {
    "text": (b"text/plain", TEXT_LINE),
    "html": (b"text/html", HTML_LINE),
}


@pytest.fixture(scope="module")
def large_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
    """A sink with the default size limit, 10 MB."""
    with running_sink(tmp_path_factory.mktemp("large")) as sink:
        yield sink


def data_section(content_type: bytes, line: bytes) -> bytes:
    """A message of MESSAGE_BYTES as a client writes it after DATA, its end line included."""
    headers = (
        b"From: ann@example.com\r\nTo: bob@example.com\r\nSubject: large\r\n"
        b"Content-Type: " + content_type + b"; charset=utf-8\r\n\r\n"
    )
    return headers + line * ((MESSAGE_BYTES - len(headers)) // len(line)) + b".\r\n"


async def send_section(sink: RunningSink, section: bytes) -> str:
    """MAIL, RCPT and DATA by hand, the section written in one go; the reply to it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.smtp_port)
    try:
        await reader.readline()  # greeting
        for command in (b"HELO client", b"MAIL FROM:<ann@example.com>", b"RCPT TO:<bob@ex.com>"):
            writer.write(command + b"\r\n")
            assert (await reader.readline()).startswith(b"250")
        writer.write(b"DATA\r\n")
        assert (await reader.readline()).startswith(b"354")
        writer.write(section)
        await writer.drain()
        return (await reader.readline()).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()


async def longest_wait(ask: Callable[[], Awaitable[object]], until: asyncio.Event) -> float:
    """Ask again and again, one answer at a time, until told to stop; the longest wait."""
    longest = 0.0
    while not until.is_set():
        started = time.monotonic()
        await ask()
        longest = max(longest, time.monotonic() - started)
        await asyncio.sleep(0.01)
    return longest


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
async def test_a_10_mb_message_never_holds_up_the_api_or_another_session(
    large_sink: RunningSink, body: tuple[bytes, bytes]
) -> None:
    section = data_section(*body)
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=large_sink.api, timeout=30) as api:
        other_session = aiosmtplib.SMTP(hostname="127.0.0.1", port=large_sink.smtp_port)
        await other_session.connect()
        try:
            pings = asyncio.create_task(longest_wait(lambda: api.get("/livez"), done))
            noops = asyncio.create_task(longest_wait(other_session.noop, done))
            await asyncio.sleep(0.2)  # both answered a few times before the message

            reply = await send_section(large_sink, section)
            done.set()
            longest_ping, longest_noop = await pings, await noops
        finally:
            other_session.close()
        stored = (await api.get("/api/v1/messages", params={"limit": 1})).json()["messages"]

    assert reply.startswith("250 2.0.0 OK stored as "), reply
    assert stored[0]["Size"] == len(section) - len(b".\r\n")
    assert longest_ping < MOST_WAIT_SECONDS, f"an HTTP ping waited {longest_ping:.3f} s"
    assert longest_noop < MOST_WAIT_SECONDS, f"a NOOP waited {longest_noop:.3f} s"


async def test_a_10_mb_message_is_read_back_whole_through_the_api(
    large_sink: RunningSink,
) -> None:
    """The API reads a large message in a thread too: what it answers is the same."""
    reply = await send_section(large_sink, data_section(*BODIES["text"]))
    message_id = reply.rsplit(" ", 1)[-1]

    async with httpx.AsyncClient(base_url=large_sink.api, timeout=60) as api:
        message = (await api.get(f"/api/v1/message/{message_id}")).json()
        headers = (await api.get(f"/api/v1/message/{message_id}/headers")).json()
        found = (await api.get("/api/v1/search", params={"query": "subject:large lazy"})).json()

    lines = (MESSAGE_BYTES - 200) // len(TEXT_LINE)
    assert message["Text"].startswith(TEXT_LINE.decode().replace("\r\n", "\n") * 3)
    assert message["Text"].count("\n") >= lines
    assert headers["Subject"] == ["large"]
    assert message_id in [m["ID"] for m in found["messages"]]
    assert found["messages"][0]["Snippet"].startswith("The quick brown fox jumps over")
