"""The two parties to the contract: our sink as a process, and a real Mailpit beside it.

Both on free ports with private data; each emptied (and its chaos switched off) before a test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.integration.smtp_sink.conftest import RunningSink, running_sink
from tests.mailpit import RunningMailpit, mailpit_binary, running_mailpit


@pytest.fixture(scope="session")
def contract_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
    with running_sink(tmp_path_factory.mktemp("contract-sink")) as sink:
        yield sink


@pytest.fixture(scope="session")
def mailpit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMailpit]:
    """Mailpit with chaos enabled, as the sink always has it."""
    with running_mailpit(
        mailpit_binary(), tmp_path_factory.mktemp("mailpit"), "--enable-chaos"
    ) as running:
        yield running


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
