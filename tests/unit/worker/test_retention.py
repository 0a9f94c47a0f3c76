"""How long the dedupe store keeps an email's state: as long as the topic keeps its record,
plus a day, unless DEDUPE_RETENTION_HOURS says otherwise."""

from __future__ import annotations

from services.worker.retention import MARGIN_SECONDS, retention_seconds

WEEK_MS = 7 * 24 * 3600 * 1000


def test_the_topics_retention_plus_a_margin_by_default() -> None:
    assert retention_seconds(None, WEEK_MS) == WEEK_MS / 1000 + MARGIN_SECONDS


def test_a_topic_that_keeps_records_for_ever_keeps_states_for_ever() -> None:
    assert retention_seconds(None, -1) is None


def test_the_setting_wins_over_the_topic() -> None:
    assert retention_seconds(48, WEEK_MS) == 48 * 3600
