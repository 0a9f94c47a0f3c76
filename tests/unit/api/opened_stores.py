"""Opening stores as more API processes would, for the contracts of the Idempotency-Keys and
the read model, each run on SQLite, in memory and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=Store)


@asynccontextmanager
async def opened_stores(new_store: Callable[[], S]) -> AsyncIterator[Callable[[], Awaitable[S]]]:
    """Opens stores made by `new_store`, closing every one on leaving."""
    opened: list[S] = []

    async def open_one() -> S:
        store = new_store()
        await store.open()
        opened.append(store)
        return store

    try:
        yield open_one
    finally:
        for store in opened:
            await store.close()
