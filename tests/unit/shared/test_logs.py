"""Logging: a message repeated many times a second is written once a minute."""

from __future__ import annotations

import logging

import pytest

from shared.logs import OncePerInterval, configure_logging


def record(message: str, logger: str = "aiokafka.consumer.fetcher") -> logging.LogRecord:
    return logging.LogRecord(logger, logging.ERROR, __file__, 1, message, None, None)


def test_a_repeated_message_passes_once_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("shared.logs.time.monotonic", lambda: clock[0])
    once = OncePerInterval("aiokafka")

    passed = [once.filter(record("Unable connect")) for _ in range(5)]
    clock[0] += 61

    assert passed == [True, False, False, False, False]
    assert once.filter(record("Unable connect")) is True
    assert once.filter(record("another message")) is True


def test_other_loggers_are_not_thinned() -> None:
    once = OncePerInterval("aiokafka")

    passed = [once.filter(record("delivered", logger="worker")) for _ in range(3)]

    assert passed == [True, True, True]


def test_what_aiokafka_children_log_is_thinned(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    try:
        for _ in range(3):
            logging.getLogger("aiokafka.consumer.fetcher").error("Failed fetch messages")
        logging.getLogger("worker").info("delivered")
        logging.getLogger("worker").info("delivered")
    finally:
        logging.basicConfig(force=True)

    assert capsys.readouterr().out.count("Failed fetch messages") == 1
