"""The suppression list as the API reaches it: the workers' list, where the dedupe store is
(DEDUPE_URL, or the SQLite file at DEDUPE_DB_PATH), opened when first asked for. The API starts
and takes emails whether that store is there or not; only `/suppressions` answers 503 then."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from shared.store import CannotOpenStore
from shared.suppressions import SuppressionList, SuppressionsUnavailable

ListOpener = Callable[[str | Path, str], Awaitable[SuppressionList]]


class Suppressions:
    def __init__(self, location: str | Path, open_list: ListOpener) -> None:
        self._location = location
        self._open_list = open_list  # shared.suppressions.open_suppression_list
        self._list: SuppressionList | None = None
        self._opening = asyncio.Lock()

    async def opened(self) -> SuppressionList:
        """The list, opened at the first call that finds its store; SuppressionsUnavailable
        until then, saying why."""
        async with self._opening:
            if self._list is None:
                try:
                    self._list = await self._open_list(self._location, "email-api")
                except CannotOpenStore as error:
                    raise SuppressionsUnavailable(str(error)) from error
            return self._list

    async def close(self) -> None:
        if self._list is not None:
            await self._list.close()
            self._list = None
