"""What became of one record, as EmailProcessor.process returns it: delivered, deferred, skipped
as a duplicate, or dead-lettered, and why, and what it published. The lane
that processed it counts it (metrics.count)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal, get_args

if TYPE_CHECKING:
    from services.worker.outbox import Message

# delivered: sent to some recipient by this try; deferred: some handed to a retry topic and
# none sent; suppressed: every recipient owed is suppressed; duplicate: nothing was owed.
Finished = Literal["delivered", "deferred", "suppressed", "duplicate", "dead-lettered"]
# poison_record: unreadable; the others as the dead_lettered event says (shared/events.py).
DeadLetterReason = Literal["poison_record", "refused", "expired", "unsendable"]
DEAD_LETTER_REASONS: Final[tuple[DeadLetterReason, ...]] = get_args(DeadLetterReason)


@dataclass(frozen=True)
class RecordOutcome:
    finished: Finished
    # Why it went to the dead-letter topic: dead-lettered, or delivered but refused for some.
    dead_letter_reason: DeadLetterReason | None = None
    accepted_at: datetime | None = None  # delivered: when the API accepted it, in UTC
    # What the try handed to the outbox: the record is finished once Kafka acknowledged it.
    published: Publication | None = None


@dataclass(frozen=True)
class Publication:
    events: Sequence[Message]
    acks: Awaitable[object]  # of the events, handed to the producer already
    retry: Sequence[Message] = ()  # the retry record: produced once the events are acknowledged
