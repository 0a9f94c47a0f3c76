"""SIGTERM and SIGINT, for every service: each sets one asyncio.Event, the service's cue for its
own clean stop (its embedded web server leaves the signals alone: shared.http_server)."""

from __future__ import annotations

import asyncio
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets, handled in the running event loop."""
    stopping = asyncio.Event()
    event_loop = asyncio.get_running_loop()
    for signal_number in STOP_SIGNALS:
        event_loop.add_signal_handler(signal_number, stopping.set)
    return stopping
