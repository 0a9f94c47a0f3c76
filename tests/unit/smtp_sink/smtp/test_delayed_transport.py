"""The delayed transport on a fake clock: each write leaves one delay after it was made, in
order, several at once together; a close waits for the last; nothing leaves after a close or
once the connection is gone."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import inspect
from collections.abc import Callable
from typing import cast

from services.smtp_sink.smtp.delayed_transport import DelayedTransport

DELAY = 0.1


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """An event loop's clock and timers, moved by hand; `early` runs timers that much before
    their time, as a loop may within its clock's resolution."""

    def __init__(self, early: float = 0.0) -> None:
        self.now = 0.0
        self.early = early
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def advance_to(self, moment: float) -> None:
        """Run every timer due by `moment`, earliest first, at its own time."""
        while due := [
            t for t in self.timers if not t.cancelled and t.when - self.early <= moment + 1e-12
        ]:
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = max(self.now, timer.when - self.early)
            timer.callback()
        self.now = moment

    @property
    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]


class FakeTransport:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes]] = []  # (when, what)
        self.closed_at: float | None = None
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert self.closed_at is None, "written after close"
        self.sent.append((round(self.clock.now, 6), data))

    def close(self) -> None:
        self.closed_at = round(self.clock.now, 6)

    def is_closing(self) -> bool:
        return self.closed_at is not None or self.aborted

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False


def delayed(clock: FakeClock) -> tuple[DelayedTransport, FakeTransport]:
    transport = FakeTransport(clock)
    return DelayedTransport(cast(asyncio.Transport, transport), DELAY, clock), transport


def test_a_write_leaves_one_delay_later_and_not_before() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)

    transport.write(b"220 hello\r\n")
    clock.advance_to(0.099)
    assert wire.sent == []
    clock.advance_to(0.1)

    assert wire.sent == [(0.1, b"220 hello\r\n")]


def test_writes_leave_in_order_each_one_delay_after_it_was_made() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)

    transport.write(b"250 OK\r\n")
    clock.advance_to(0.001)
    transport.write(b"250 2.1.5 OK\r\n")
    clock.advance_to(0.05)
    transport.write(b"354 End data\r\n")
    clock.advance_to(1.0)

    assert wire.sent == [
        (0.1, b"250 OK\r\n"),
        (0.101, b"250 2.1.5 OK\r\n"),
        (0.15, b"354 End data\r\n"),
    ]


def test_a_group_written_at_once_leaves_together_one_delay_later() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)

    for reply in (b"250 OK\r\n", b"250 A\r\n", b"250 B\r\n", b"354 Go\r\n"):
        transport.write(reply)
    clock.advance_to(1.0)

    assert wire.sent == [(0.1, b"250 OK\r\n250 A\r\n250 B\r\n354 Go\r\n")]
    assert transport.get_write_buffer_size() == 0


def test_a_timer_run_a_hair_early_still_sends_what_it_was_set_for() -> None:
    clock = FakeClock(early=0.0005)
    transport, wire = delayed(clock)

    transport.write(b"220 hello\r\n")
    clock.advance_to(0.099)
    assert wire.sent == []
    clock.advance_to(0.0996)  # the timer runs 0.5 ms before its deadline

    assert [data for _, data in wire.sent] == [b"220 hello\r\n"]
    assert clock.pending == [], "no timer set again and again for the same write"


def test_what_was_written_leaves_even_if_the_caller_reuses_its_buffer() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)
    buffer = bytearray(b"250 OK\r\n")

    transport.write(buffer)
    buffer[:] = b"XXXXXXXX"
    clock.advance_to(1.0)

    assert wire.sent == [(0.1, b"250 OK\r\n")]


def test_close_waits_for_the_last_pending_write_then_closes() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)

    transport.write(b"250 OK\r\n")
    clock.advance_to(0.01)
    transport.write(b"221 Bye\r\n")
    transport.close()
    assert transport.is_closing()
    assert wire.closed_at is None
    clock.advance_to(1.0)

    assert wire.sent == [(0.1, b"250 OK\r\n"), (0.11, b"221 Bye\r\n")]
    assert wire.closed_at == 0.11
    assert wire.reading, "the session reads on until the connection closes"


def test_close_with_nothing_pending_closes_at_once() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)

    transport.close()

    assert wire.closed_at == 0.0


def test_nothing_written_after_close_leaves() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)

    transport.write(b"421 4.7.0 Too many\r\n")
    transport.close()
    transport.write(b"503 Error: need MAIL command\r\n")
    clock.advance_to(1.0)

    assert wire.sent == [(0.1, b"421 4.7.0 Too many\r\n")]
    assert wire.closed_at == 0.1


def test_once_the_connection_is_gone_nothing_pending_is_sent() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)

    transport.write(b"250 OK\r\n")
    transport.discard()
    clock.advance_to(1.0)

    assert wire.sent == []
    assert clock.pending == []
    assert transport.is_closing()


def test_abort_drops_what_is_pending() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)

    transport.write(b"250 OK\r\n")
    transport.abort()
    clock.advance_to(1.0)

    assert (wire.sent, wire.aborted) == ([], True)


def test_a_fatal_tls_error_drops_the_connection_as_asyncio_expects() -> None:
    clock = FakeClock()
    transport, wire = delayed(clock)

    transport._force_close(OSError("handshake failed"))

    assert wire.aborted
    # aiosmtpd's STARTTLS hands this transport to asyncio's SSLProtocol, which calls it so.
    assert "self._transport._force_close(" in inspect.getsource(asyncio.sslproto.SSLProtocol)
