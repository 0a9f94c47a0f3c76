"""The two parties to the contract: our sink as a process, and a real Mailpit beside it.

Both on free ports with private data; each emptied (and its chaos switched off) before a test.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from deploy.local.mailpit import fetch_mailpit
from shared.settings import Settings
from tests.conftest import free_port
from tests.integration.smtp_sink.conftest import RunningSink, running_sink


@dataclass
class RunningMailpit:
    process: subprocess.Popen[bytes]
    smtp_port: int
    http_port: int
    log_path: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="session")
def contract_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
    with running_sink(tmp_path_factory.mktemp("contract-sink")) as sink:
        yield sink


@pytest.fixture(scope="session")
def mailpit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMailpit]:
    """Mailpit as `make up` would run it, with chaos enabled as the sink always has it."""
    binary = fetch_mailpit(Settings().mailpit_cache_dir).binary
    data_dir = tmp_path_factory.mktemp("mailpit")
    smtp_port, http_port = free_port(), free_port()
    log_path = data_dir / "mailpit.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(str(binary), "--smtp", f"127.0.0.1:{smtp_port}"),
                *("--listen", f"127.0.0.1:{http_port}"),
                *("--database", str(data_dir / "mailpit.db")),
                *("--enable-chaos", "--disable-version-check"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningMailpit(process, smtp_port, http_port, log_path)
    try:
        _wait_until_ready(running)
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(mailpit: RunningMailpit, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mailpit.process.poll() is not None:
            raise AssertionError(
                f"Mailpit exited {mailpit.process.returncode}:\n{mailpit.output()}"
            )
        try:
            if httpx.get(f"{mailpit.api}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"Mailpit was not ready after {timeout} s:\n{mailpit.output()}")


async def reset(base_url: str) -> None:
    """Empty the mailbox and switch every chaos trigger off."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        (await client.delete("/api/v1/messages")).raise_for_status()
        (await client.put("/api/v1/chaos", json={})).raise_for_status()


@pytest.fixture
async def sink(contract_sink: RunningSink) -> RunningSink:
    """The session's sink, emptied and without chaos for this test."""
    await reset(contract_sink.api)
    return contract_sink


@pytest.fixture
async def api(sink: RunningSink) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sink.api) as client:
        yield client


@pytest.fixture
async def fresh_mailpit(mailpit: RunningMailpit) -> RunningMailpit:
    """The session's Mailpit, emptied and without chaos for this test."""
    await reset(mailpit.api)
    return mailpit
