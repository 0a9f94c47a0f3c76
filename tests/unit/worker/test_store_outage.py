"""Whether the dedupe store answers, as /readyz tells it: the reason of the latest failure, for
as long as the failures have lasted, and nothing once it answers again."""

from __future__ import annotations

from services.worker.store_outage import StoreOutage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_answering_store_shows_no_outage() -> None:
    outage = StoreOutage(clock=Clock())

    outage.answered()

    assert (outage.reason, outage.seconds) == (None, 0.0)


def test_an_outage_lasts_from_its_first_failure_and_says_the_latest() -> None:
    clock = Clock()
    outage = StoreOutage(clock=clock)

    outage.failed("ConnectionRefusedError: the dedupe store is restarting")
    clock.now += 4
    outage.failed("TimeoutError: no answer within 5 s")
    clock.now += 3

    assert outage.reason == "TimeoutError: no answer within 5 s"
    assert outage.seconds == 7


def test_an_answer_ends_the_outage_and_the_next_one_starts_afresh() -> None:
    clock = Clock()
    outage = StoreOutage(clock=clock)
    outage.failed("OperationalError: database is locked")
    clock.now += 10

    outage.answered()
    ended = (outage.reason, outage.seconds)
    clock.now += 5
    outage.failed("OperationalError: disk I/O error")
    clock.now += 2

    assert ended == (None, 0.0)
    assert (outage.reason, outage.seconds) == ("OperationalError: disk I/O error", 2)
