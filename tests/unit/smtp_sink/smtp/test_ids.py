"""Message IDs: URL-safe, 22 characters (128 bits), all different, in the order they were made."""

from __future__ import annotations

import re

from services.smtp_sink.smtp.ids import BATCH, TimeOrderedIds


def test_ids_are_url_safe_22_characters_and_never_repeat() -> None:
    new_id = TimeOrderedIds()

    ids = [new_id() for _ in range(BATCH * 3 + 7)]

    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", id_) for id_ in ids)


def test_ids_sort_as_their_milliseconds_did() -> None:
    # Steps that move each of the clock's six bytes, up to the 2080s.
    milliseconds = [0, 1, 63, 64, 255, 256, 65_535, 65_536, 1_764_000_000_000, 3_500_000_000_000]
    clock = iter(milliseconds)
    new_id = TimeOrderedIds(clock_ms=lambda: next(clock))

    ids = [new_id() for _ in milliseconds]

    assert ids == sorted(ids)


def test_ids_of_one_millisecond_differ_only_after_the_clock() -> None:
    new_id = TimeOrderedIds(clock_ms=lambda: 1_764_000_000_000)

    ids = [new_id() for _ in range(100)]

    # 48 clock bits are exactly the first eight characters
    assert len({id_[:8] for id_ in ids}) == 1
    assert len({id_[8:] for id_ in ids}) == 100
