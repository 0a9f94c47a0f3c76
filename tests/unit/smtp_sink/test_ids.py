"""Message IDs: URL-safe, 22 characters (128 bits), all different, across batches."""

from __future__ import annotations

import base64
import re

from services.smtp_sink.ids import BATCH, RandomIds


def test_ids_are_url_safe_128_bit_and_never_repeat() -> None:
    new_id = RandomIds()

    ids = [new_id() for _ in range(BATCH * 3 + 7)]

    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", id_) for id_ in ids)
    assert all(len(base64.urlsafe_b64decode(id_ + "==")) == 16 for id_ in ids)
