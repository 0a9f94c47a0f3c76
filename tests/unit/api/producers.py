"""The producer factory an EmailQueue is given in the API's unit tests: it makes each fake
producer the queue asks for and keeps them, one factory per test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Producers:
    """Makes the producers an EmailQueue asks for, and remembers them: each test its own."""

    def __init__(self, make: Callable[[int], Any]) -> None:
        self._make = make  # given the producer's number: 1 for the first the queue asks for
        self.made: list[Any] = []

    def __call__(self) -> Any:
        producer = self._make(len(self.made) + 1)
        self.made.append(producer)
        return producer
