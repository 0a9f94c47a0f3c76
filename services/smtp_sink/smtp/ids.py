"""Message IDs: 22 URL-safe characters (like Mailpit's) that sort by the millisecond they were
made in: a clock, then 80 random bits, so the store's index on them grows at one end."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable

CLOCK_BYTES = 6  # milliseconds since the epoch, for the next 8,900 years
RANDOM_BYTES = 10
BATCH = 256  # ids per read of the OS's random source: one `getrandom` per id cost a twentieth

# base64url's 64 characters, and the same characters in ASCII order: translated, the text of
# an id sorts as its bytes do.
_URLSAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SORTABLE = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_TO_SORTABLE = bytes.maketrans(_URLSAFE, _SORTABLE)


def _milliseconds() -> int:
    return time.time_ns() // 1_000_000


class TimeOrderedIds:
    """Random ids would scatter a commit's inserts over the whole index, a page written each."""

    def __init__(self, clock_ms: Callable[[], int] = _milliseconds) -> None:
        self._clock_ms = clock_ms
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        if self._at + RANDOM_BYTES > len(self._pool):
            self._pool, self._at = os.urandom(RANDOM_BYTES * BATCH), 0
        random_part = self._pool[self._at : self._at + RANDOM_BYTES]
        self._at += RANDOM_BYTES
        clock_part = (self._clock_ms() % (1 << (8 * CLOCK_BYTES))).to_bytes(CLOCK_BYTES, "big")
        encoded = base64.urlsafe_b64encode(clock_part + random_part).rstrip(b"=")
        return encoded.translate(_TO_SORTABLE).decode("ascii")
