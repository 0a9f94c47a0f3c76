"""The real sink with SINK_AUTH_FILE: a connection gets three tries at the password, the third
failure is 421 4.7.0 and the end of it; and an auth file other users may read is a warning at
start that names it, its mode and the fix."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from services.smtp_sink.smtp.auth import MAX_FAILED_ATTEMPTS
from tests.integration.smtp_sink.conftest import RunningSink, running_sink

USER, PASSWORD = "pipeline", "s3cret"
INVALID = b"535 5.7.8 Authentication credentials invalid\r\n"
TOO_MANY = b"421 4.7.0 Too many failed authentication attempts\r\n"


def auth_file(directory: Path, mode: int) -> Path:
    path = directory / "auth"
    path.write_text(f"{USER}:{PASSWORD}\n")
    path.chmod(mode)
    return path


@pytest.fixture(scope="module", params=["0", "50"], ids=["at_once", "every_reply_50_ms_late"])
def auth_sink(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningSink]:
    """AUTH required, over plaintext (no TLS configured); the auth file private to its owner.
    Its replies at once, and SINK_REPLY_DELAY_MS late: the 421 still comes before the close."""
    directory = tmp_path_factory.mktemp("auth")
    with running_sink(
        directory,
        SINK_AUTH_FILE=str(auth_file(directory, 0o600)),
        SINK_REPLY_DELAY_MS=request.param,
    ) as sink:
        yield sink


class Session:
    """An SMTP session spoken by hand: each command's whole reply, and whether the sink hung up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def command(self, line: str) -> bytes:
        self._writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def reply(self) -> bytes:
        lines = [await asyncio.wait_for(self._reader.readline(), 10)]
        while lines[-1][3:4] == b"-":
            lines.append(await asyncio.wait_for(self._reader.readline(), 10))
        return b"".join(lines)

    async def auth_plain(self, password: str) -> bytes:
        token = base64.b64encode(f"\0{USER}\0{password}".encode()).decode()
        return await self.command(f"AUTH PLAIN {token}")

    async def closed_by_the_sink(self) -> bool:
        return await asyncio.wait_for(self._reader.read(), 10) == b""


@asynccontextmanager
async def session(sink: RunningSink) -> AsyncIterator[Session]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.smtp_port)
    smtp = Session(reader, writer)
    try:
        await smtp.reply()  # greeting
        assert (await smtp.command("EHLO client")).startswith(b"250")
        yield smtp
    finally:
        writer.close()


async def test_the_third_failed_auth_on_a_connection_is_421_and_the_sink_hangs_up(
    auth_sink: RunningSink,
) -> None:
    async with session(auth_sink) as smtp:
        replies = [await smtp.auth_plain(f"wrong {n}") for n in range(MAX_FAILED_ATTEMPTS)]
        assert replies == [INVALID, INVALID, TOO_MANY]
        assert await smtp.closed_by_the_sink()

    assert "closed the connection from 127.0.0.1 after 3 failed AUTH attempts" in (
        auth_sink.output()
    )


async def test_the_right_password_after_two_failures_gets_in(auth_sink: RunningSink) -> None:
    async with session(auth_sink) as smtp:
        failures = [await smtp.auth_plain("wrong"), await smtp.auth_plain("wrong")]
        authenticated = await smtp.auth_plain(PASSWORD)
        mail = await smtp.command("MAIL FROM:<ann@example.com>")

    assert failures == [INVALID, INVALID]
    assert authenticated == b"235 2.7.0 Authentication successful\r\n"
    assert mail.startswith(b"250")


async def test_each_connection_gets_its_own_tries(auth_sink: RunningSink) -> None:
    async with session(auth_sink) as smtp:
        for _ in range(MAX_FAILED_ATTEMPTS):
            await smtp.auth_plain("wrong")
    async with session(auth_sink) as smtp:
        replies = [await smtp.auth_plain("wrong"), await smtp.auth_plain(PASSWORD)]

    assert replies == [INVALID, b"235 2.7.0 Authentication successful\r\n"]


def test_an_auth_file_other_users_may_read_is_one_warning_at_start(tmp_path: Path) -> None:
    exposed = auth_file(tmp_path, 0o644)

    with running_sink(tmp_path, SINK_AUTH_FILE=str(exposed)) as sink:
        output = sink.output()

    warnings = [line for line in output.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, output
    assert warnings[0].endswith(
        f" WARNING services.smtp_sink: SINK_AUTH_FILE={exposed} holds the sink's passwords, "
        f"but its mode 0644 opens it to its group and other users: run chmod 600 {exposed}"
    ), output
    assert PASSWORD not in output


def test_an_auth_file_only_its_owner_may_read_is_no_warning(auth_sink: RunningSink) -> None:
    assert "chmod" not in auth_sink.output()
