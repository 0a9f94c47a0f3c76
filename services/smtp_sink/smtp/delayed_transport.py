"""A connection's transport whose every write leaves a fixed delay late, in order, and whose close
waits for the last of them: the sink's replies as a client far away receives them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """The event loop's clock and timers (an asyncio loop is one)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object], /) -> Cancellable: ...


class DelayedTransport(asyncio.Transport):
    """The transport of one connection, with every write sent `delay` seconds after it was made.

    As over a network path of that round trip: the writes leave in the order they were made,
    each on its own schedule, so ten written at once arrive together one delay later, not ten
    delays later; the connection's reading goes on meanwhile. `close()` sends what is pending
    first, then closes; nothing written after it leaves, as from a closed transport. Reading,
    flow control and everything else are the transport's own.
    """

    def __init__(self, transport: asyncio.Transport, delay: float, clock: Clock) -> None:
        super().__init__()
        self._transport = transport
        self._delay = delay
        self._clock = clock
        # (when to send, what): in the order written, which is the order of their deadlines.
        self._pending: deque[tuple[float, bytes]] = deque()
        self._timer: Cancellable | None = None  # set for the first pending write's deadline
        self._pending_bytes = 0
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        deadline = self._clock.time() + self._delay
        copy = bytes(data)  # the caller may reuse its buffer before this leaves
        self._pending.append((deadline, copy))
        self._pending_bytes += len(copy)
        if self._timer is None:
            self._timer = self._clock.call_at(deadline, self._send_due)

    def _send_due(self) -> None:
        self._timer = None
        # The write the timer was set for is due, even if the loop ran it a hair early (it may,
        # by its clock's resolution); together with every other write due by now, in order.
        now = max(self._clock.time(), self._pending[0][0])
        due: list[bytes] = []
        while self._pending and self._pending[0][0] <= now:
            due.append(self._pending.popleft()[1])
        sending = b"".join(due)
        self._pending_bytes -= len(sending)
        self._transport.write(sending)
        if self._pending:
            self._timer = self._clock.call_at(self._pending[0][0], self._send_due)
        elif self._closing:
            self._transport.close()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._pending:
            self._transport.close()

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def abort(self) -> None:
        self.discard()
        self._transport.abort()

    def _force_close(self, exc: BaseException | None) -> None:
        """What asyncio's SSLProtocol calls on a fatal TLS error (aiosmtpd's STARTTLS gives it
        this transport): the connection is dropped, as by abort()."""
        self.abort()

    def discard(self) -> None:
        """Send nothing more: the connection is gone."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        self._pending_bytes = 0

    def get_write_buffer_size(self) -> int:
        return self._pending_bytes + self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return False  # an end of file would overtake the pending writes

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()
