"""A lean HTTP/1.1 load generator: keep-alive connections, pre-built requests, no parsing beyond
the status line and Content-Length. A general client (httpx) costs the 2 cores more CPU per
request than the API does, and would measure itself instead of the API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answer:
    status: int
    body: bytes
    sent: float  # time.time() when the request went out
    answered: float


@dataclass
class HttpConnection:
    host: str
    port: int
    reader: asyncio.StreamReader = field(init=False)
    writer: asyncio.StreamWriter = field(init=False)

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post_json(
        self, path: str, payload: dict[str, Any], headers: dict[str, str]
    ) -> Answer:
        body = json.dumps(payload).encode()
        lines = [
            f"POST {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        sent = time.time()
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer_body = await self.reader.readexactly(length)
        return Answer(int(status_line.split()[1]), answer_body, sent, time.time())

    def close(self) -> None:
        self.writer.close()


async def post_many(
    host: str,
    port: int,
    path: str,
    count: int,
    concurrency: int,
    request: Callable[[int], tuple[dict[str, Any], dict[str, str]]],
    rate: float | None = None,
) -> list[Answer]:
    """POST `count` requests over `concurrency` keep-alive connections, as fast as they are
    answered, or at `rate` requests per second in all."""
    answers: list[Answer] = []
    numbers = iter(range(count))
    started = time.monotonic()

    async def client() -> None:
        connection = HttpConnection(host, port)
        await connection.open()
        try:
            for number in numbers:
                if rate is not None:
                    await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
                payload, headers = request(number)
                answers.append(await connection.post_json(path, payload, headers))
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return answers
