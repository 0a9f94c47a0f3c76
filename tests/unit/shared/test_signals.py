"""shared.signals.stop_on_signals: SIGTERM and SIGINT, sent to this process, set the stop event
through the running event loop, as every service stops.

Each test runs its own event loop in the main thread, where signals are delivered, as
shared.event_loop runs a service's.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from shared.event_loop import run
from shared.signals import STOP_SIGNALS, stop_on_signals


@pytest.fixture
def outside_the_loop() -> Iterator[list[int]]:
    """The signals that reached no event loop's handler: recorded here rather than ending the
    test run (SIGTERM) or raising KeyboardInterrupt (SIGINT); the handlers before put back."""
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    unhandled: list[int] = []

    def record(number: int, frame: FrameType | None) -> None:
        unhandled.append(number)

    for number in STOP_SIGNALS:
        signal.signal(number, record)
    try:
        yield unhandled
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_the_stop_signals_are_sigterm_and_sigint() -> None:
    assert set(STOP_SIGNALS) == {signal.SIGTERM, signal.SIGINT}


@pytest.mark.parametrize("number", STOP_SIGNALS, ids=lambda number: signal.Signals(number).name)
def test_a_stop_signal_sets_the_stop_event_through_the_running_loop(
    number: signal.Signals, outside_the_loop: list[int]
) -> None:
    async def main() -> tuple[bool, bool]:
        stopping = stop_on_signals()
        set_before = stopping.is_set()
        os.kill(os.getpid(), number)
        await asyncio.wait_for(stopping.wait(), timeout=5)
        # True only for a handler the loop holds: the signal was handled in it.
        return set_before, asyncio.get_running_loop().remove_signal_handler(number)

    set_before, handled_by_the_loop = run(main())

    assert not set_before
    assert handled_by_the_loop
    assert outside_the_loop == []
