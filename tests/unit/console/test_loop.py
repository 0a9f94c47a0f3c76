"""The snapshot loop's pieces that need no Kafka: how a source's failure is put in words."""

from __future__ import annotations

from aiokafka.errors import NodeNotReadyError

from services.console.loop import describe_error


def test_an_error_is_one_line_naming_its_kind_once() -> None:
    assert describe_error(NodeNotReadyError("node 1 is not ready")).count("NodeNotReadyError") == 1
    assert describe_error(ConnectionRefusedError("refused")) == "ConnectionRefusedError: refused"
    assert describe_error(TimeoutError()) == "TimeoutError"
