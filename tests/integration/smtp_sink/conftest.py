"""The real sink as a process (`python -m services.smtp_sink`) on free ports and a private run dir.

Ready when /readyz says so; stopped by its pid with SIGTERM, and it must exit 0 without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from shared.settings import PROJECT_ROOT
from tests.conftest import free_port

LATER = "later@example.com"  # SINK_FAIL_4XX_RECIPIENTS of the shared sink
NOBODY = "nobody@example.com"  # SINK_FAIL_5XX_RECIPIENTS of the shared sink
MAX_MESSAGE_BYTES = 64 * 1024  # SINK_MAX_MESSAGE_BYTES of the shared sink


@dataclass
class RunningSink:
    process: subprocess.Popen[bytes]
    run_dir: Path
    smtp_port: int
    http_port: int
    log_path: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def output(self) -> str:
        """Everything the sink printed so far, stdout and stderr."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """SIGTERM to this sink's own pid; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@contextmanager
def running_sink(run_dir: Path, **settings: str) -> Iterator[RunningSink]:
    """A sink with its own free ports; settings are extra environment variables."""
    run_dir.mkdir(parents=True, exist_ok=True)
    smtp_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "RUN_DIR": str(run_dir),
        "SINK_HOST": "127.0.0.1",
        "SINK_SMTP_PORT": str(smtp_port),
        "SINK_HTTP_PORT": str(http_port),
        "SINK_DB_PATH": str(run_dir / "sink" / "messages.sqlite3"),
        **settings,
    }
    log_path = run_dir / f"sink-{smtp_port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.smtp_sink"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sink = RunningSink(process, run_dir, smtp_port, http_port, log_path)
    try:
        _wait_until_ready(sink)
        yield sink
    finally:
        exit_status = sink.stop()
    assert exit_status == 0, f"the sink exited {exit_status}:\n{sink.output()}"
    assert "Traceback" not in sink.output(), sink.output()


def _wait_until_ready(sink: RunningSink, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink.process.poll() is not None:
            raise AssertionError(f"the sink exited {sink.process.returncode}:\n{sink.output()}")
        try:
            if httpx.get(f"{sink.api}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the sink was not ready after {timeout} s:\n{sink.output()}")


@pytest.fixture(scope="module")
def shared_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
    """One sink for a module's tests, with fault recipients and a 64 KiB size limit."""
    with running_sink(
        tmp_path_factory.mktemp("sink"),
        SINK_FAIL_4XX_RECIPIENTS=LATER,
        SINK_FAIL_5XX_RECIPIENTS=NOBODY,
        SINK_MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
    ) as sink:
        yield sink


@pytest.fixture
async def sink(shared_sink: RunningSink) -> RunningSink:
    """The shared sink, emptied for this test."""
    async with httpx.AsyncClient(base_url=shared_sink.api) as client:
        (await client.delete("/api/v1/messages")).raise_for_status()
    return shared_sink


@pytest.fixture
async def api(sink: RunningSink) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sink.api) as client:
        yield client


# Writing to the sink, for every test module here.


def email(
    subject: str = "Hello",
    to: str = "bob@example.com",
    message_id: str | None = None,
    body: str = "First line\nSecond line\n",
    sender: str = "Ann Sender <ann@example.com>",
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.com>"
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message


async def send(sink: RunningSink, message: EmailMessage | bytes, **options: object) -> str:
    """Send and return the sink's reply to DATA."""
    if isinstance(message, bytes):
        options.setdefault("sender", "ann@example.com")
        options.setdefault("recipients", ["bob@example.com"])
    _, reply = await aiosmtplib.send(
        message,
        hostname="127.0.0.1",
        port=sink.smtp_port,
        **options,  # type: ignore[arg-type]
    )
    return reply


class RawSmtp:
    """An SMTP client that shows what aiosmtplib hides: the replies as sent, commands sent
    together in one write (RFC 2920's PIPELINING, which aiosmtplib does not do), and a hang-up
    by the sink (aiosmtplib closes the connection itself on a 421)."""

    def __init__(self, sink: RunningSink) -> None:
        self._port = sink.smtp_port
        self.greeting = ""

    async def __aenter__(self) -> RawSmtp:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        self.greeting = await self.reply()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def command(self, line: str) -> str:
        [reply] = await self.commands(line)
        return reply

    async def commands(self, *lines: str) -> list[str]:
        """Send every line in one write, then read a reply to each."""
        self.write("".join(f"{line}\r\n" for line in lines).encode())
        return [await self.reply() for _ in lines]

    async def message(self, raw: bytes) -> str:
        """After DATA's 354: a message (lines that end in CRLF, none starting with a dot), the
        "." that ends it, and the reply."""
        self.write(raw + b".\r\n")
        return await self.reply()

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    async def closed_by_the_sink(self) -> bool:
        """Whether the sink closes the connection without being asked, within 2 s."""
        try:
            return await asyncio.wait_for(self._reader.read(), timeout=2) == b""
        except TimeoutError:
            return False

    async def reply(self) -> str:
        """The last line of a reply, without its CRLF (the reply of a multi-line one)."""
        return (await self.reply_lines())[-1]

    async def reply_lines(self) -> list[str]:
        """Every line of a reply, without their CRLF."""
        lines: list[str] = []
        while not lines or lines[-1][3:4] == "-":
            line = await asyncio.wait_for(self._reader.readline(), timeout=10)
            lines.append(line.decode().rstrip("\r\n"))
        return lines
