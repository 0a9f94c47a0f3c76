"""shared.event_loop.run: the main coroutine runs to its result on uvloop where it is installed,
and on asyncio's own loop where it is not.

Each run is in a thread of its own: a run on asyncio's loop (asyncio.run) clears its thread's
current event loop as it ends, and the main thread's belongs to the test session.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from shared.event_loop import run

T = TypeVar("T")


async def running_loop_type() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def run_in_a_thread(main: Coroutine[Any, Any, T]) -> T:
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(run, main).result(timeout=10)


def test_the_main_coroutine_runs_on_uvloop_where_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")

    assert run_in_a_thread(running_loop_type()) is uvloop.Loop


def test_without_uvloop_the_main_coroutine_runs_on_asyncios_own_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError

    loop_type = run_in_a_thread(running_loop_type())

    assert issubclass(loop_type, asyncio.BaseEventLoop)
    assert loop_type.__module__.startswith("asyncio.")


def test_what_the_main_coroutine_raises_comes_out_of_run() -> None:
    async def failing() -> None:
        raise LookupError("from the main coroutine")

    with pytest.raises(LookupError, match="from the main coroutine"):
        run_in_a_thread(failing())
