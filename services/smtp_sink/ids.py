"""Message IDs: 128 random bits each, URL-safe (like Mailpit's), drawn from the OS a few
kilobytes at a time: one `getrandom` per message was a twentieth of the sink at full speed."""

from __future__ import annotations

import base64
import os

ID_BYTES = 16
BATCH = 256  # ids per read of the OS's random source


class RandomIds:
    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        if self._at + ID_BYTES > len(self._pool):
            self._pool, self._at = os.urandom(ID_BYTES * BATCH), 0
        chunk = self._pool[self._at : self._at + ID_BYTES]
        self._at += ID_BYTES
        return base64.urlsafe_b64encode(chunk).rstrip(b"=").decode("ascii")
