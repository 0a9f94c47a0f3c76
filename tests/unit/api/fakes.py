"""The API built for its unit tests: the real app with fakes for what lies outside it (Kafka,
the stores), each test its own."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI

from services.api.app import create_app
from services.api.email_queue import EmailQueue
from services.api.idempotency_store import IdempotencyStore
from services.api.status_store import StatusStore
from services.api.suppressions import Suppressions
from shared.settings import Settings
from shared.store import CannotOpenStore
from shared.suppressions import (
    Suppression,
    SuppressionList,
    SuppressionPage,
    SuppressionsUnavailable,
)
from shared.suppressions.contract import checked_page_size, normalized
from tests.unit.api.memory_status_store import MemoryStatusStore


class IdleStatusConsumer:
    """The status consumer, without Kafka: it never applies anything."""

    def __init__(self) -> None:
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


class MemorySuppressionList:
    """shared.suppressions' contract in memory, and a switch that makes every call fail."""

    def __init__(self) -> None:
        self.suppressions: dict[str, Suppression] = {}
        self.unavailable = False
        self.closed = False

    def _check(self) -> None:
        if self.unavailable:
            raise SuppressionsUnavailable("the test's suppression list is away")

    async def suppressed(self, addresses: Iterable[str]) -> dict[str, Suppression]:
        self._check()
        found = {address: self.suppressions.get(normalized(address)) for address in addresses}
        return {address: s for address, s in found.items() if s is not None}

    async def suppress(self, address: str, reply: str, message_id: str) -> None:
        self._check()
        key = normalized(address)
        self.suppressions.setdefault(
            key, Suppression(key, reply, message_id, datetime(2026, 11, 25, 9, 31, tzinfo=UTC))
        )

    async def page(self, after: str | None, limit: int) -> SuppressionPage:
        self._check()
        limit = checked_page_size(limit)
        start = "" if after is None else normalized(after)
        found = [self.suppressions[a] for a in sorted(self.suppressions) if a > start]
        page = found[:limit]
        return SuppressionPage(page, page[-1].address if len(found) > limit else None)

    async def lift(self, address: str) -> bool:
        self._check()
        return self.suppressions.pop(normalized(address), None) is not None

    async def close(self) -> None:
        self.closed = True


class ListOpener:
    """Opens `opened` as shared.suppressions.open_suppression_list would; `cannot_open` makes
    it fail as a store that is not there."""

    def __init__(self, opened: MemorySuppressionList) -> None:
        self.opened = opened
        self.cannot_open = False
        self.calls = 0

    async def __call__(self, location: str | Path, application_name: str) -> SuppressionList:
        self.calls += 1
        if self.cannot_open:
            raise CannotOpenStore(f"cannot reach the dedupe store at {location}")
        return self.opened


def app_with_fakes(
    settings: Settings,
    queue: EmailQueue,
    key_store: IdempotencyStore,
    status_store: StatusStore | None = None,
    suppressions: MemorySuppressionList | ListOpener | None = None,
) -> FastAPI:
    """The API with `queue` and `key_store`, an empty read model unless one is given, no
    status consumer, and a suppression list in memory."""
    if isinstance(suppressions, ListOpener):
        opener = suppressions
    else:
        opener = ListOpener(suppressions or MemorySuppressionList())
    return create_app(
        settings,
        queue,
        key_store,
        status_store or MemoryStatusStore(),
        IdleStatusConsumer(),
        Suppressions("dedupe-store", opener),
    )
