"""`python -m tests.bench.worker_steps [--repeat N]`: the CPU time of the steps the worker takes
for each email that the direct SMTP client of the ceiling stage does not, each alone.

The client is handed the rendered bytes and does nothing but SMTP; the worker also parses the
record, renders it, makes the `accepted` event, turns the server's reply into the events' Reply
and makes a `sent` event per recipient (besides consuming, writing its store and producing,
which this leaves out). Prints the CPU microseconds per call of each, the least of `--repeat`
rounds of 5,000 calls, and their sum: what cpu/client (docs/performance.md) has to fit beside
the client's own time.
"""

from __future__ import annotations

import argparse
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

from services.worker.mime import render_email
from shared.events import Position, Reply, Sent, accepted_event
from shared.schema import parse_record
from tests.bench.stages import email_record

CALLS = 5_000


def microseconds_per_call(step: Callable[[], object], repeat: int) -> float:
    rounds = timeit.repeat(step, timer=time.process_time, number=CALLS, repeat=repeat)
    return min(rounds) / CALLS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.worker_steps", description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="rounds of 5,000 calls per step")
    repeat = parser.parse_args().repeat

    record = email_record(1, "steps")  # the bench's own email, as the stages send it
    value = record.to_kafka()[1]
    here = Position(topic="email.send", partition=0, offset=0)
    reply = Reply.of(250, "2.0.0 Ok: queued as 4F2A")
    now = datetime.now(UTC)

    def sent_event() -> object:
        return Sent(
            message_id=record.message_id, at=now, record=here, recipient=record.recipients[0],
            attempt=0, reply=reply,
        ).to_kafka()  # fmt: skip

    steps: dict[str, Callable[[], object]] = {
        "parse the record": lambda: parse_record(value),
        "render MIME": lambda: render_email(record, "example.com"),
        "the accepted event": lambda: accepted_event(record, here).to_kafka(),
        "the events' Reply": lambda: Reply.of(250, "2.0.0 Ok: queued as 4F2A"),
        "a sent event": sent_event,
    }
    total = 0.0
    for name, step in steps.items():
        took = microseconds_per_call(step, repeat)
        total += took
        print(f"{name:<20} {took:6.1f} us")
    print(f"{'together':<20} {total:6.1f} us an email of one recipient")


if __name__ == "__main__":
    main()
