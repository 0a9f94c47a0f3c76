"""Logging: a message repeated many times a second is written once a minute."""

from __future__ import annotations

import logging

import pytest

from shared.logs import OncePerInterval


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, message, None, None)


def test_a_repeated_message_passes_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("shared.logs.time.monotonic", lambda: clock[0])
    once = OncePerInterval()

    passed = [once.filter(record("Unable connect")) for _ in range(5)]
    clock[0] += 61

    assert passed == [True, False, False, False, False]
    assert once.filter(record("Unable connect")) is True
    assert once.filter(record("another message")) is True
