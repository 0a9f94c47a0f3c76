"""`python -m tests.bench.data_section_limit [--rounds N]`: what raising the StreamReader's limit
(services/smtp_sink/fast_paths/asyncio_internals.py) buys the sink's bulk DATA reading.

The same DATA sections are read by read_data_section with the reader's limit raised, as the sink
reads them, and left at aiosmtpd's own (its line length limit, 1001 bytes), in alternating
rounds, two ways: over a loopback connection, client and server on one event loop run as the
sink's is (shared.event_loop: uvloop), the transport paused and resumed as the limit says; and
from a reader already holding the whole section, Python's work alone. Prints microseconds per
message for each and their ratio, medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import random
import statistics
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from unittest import mock

from aiosmtpd.smtp import SMTP

from services.smtp_sink.fast_paths import data_section
from services.smtp_sink.fast_paths.data_section import read_data_section
from shared.event_loop import run
from shared.settings import Settings

LINE_LENGTH_LIMIT = SMTP.line_length_limit  # aiosmtpd makes each reader with it as its limit
SIZE_LIMIT = Settings.model_fields["sink_max_message_bytes"].default
VARIANTS = ("raised", "default")


@dataclass(frozen=True)
class Message:
    name: str
    section: bytes  # the DATA section as a client writes it: dot-stuffed, "." CRLF last
    content: bytes  # what read_data_section hands back
    per_batch: int  # messages in one timed batch: tens of milliseconds


def text_email(paragraphs: int, html: bool = False, attachment_bytes: int = 0) -> bytes:
    """An email as a mail client writes it: headers, paragraphs of text wrapped at 72
    characters (each one's last line ending in a dot), the same in HTML if asked (no line of it
    ends in a dot), and an attachment in base64 if asked."""
    draw = random.Random(20261206)
    words = ["the", "order", "has", "shipped", "and", "will", "arrive", "within", "three"]
    sentences = [" ".join(draw.choices(words, k=60)).capitalize() + "." for _ in range(paragraphs)]
    text = "\r\n\r\n".join("\r\n".join(textwrap.wrap(sentence, 72)) for sentence in sentences)
    headers = [
        "From: Shop <orders@shop.example.com>",
        "To: Ana <ana@example.com>",
        "Subject: Your order 4711 has shipped",
        "Date: Sun, 06 Dec 2026 11:00:00 +0000",
        "Message-ID: <4711.1765018800@shop.example.com>",
        "MIME-Version: 1.0",
    ]
    if not html and not attachment_bytes:
        headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 7bit"]
        return ("\r\n".join(headers) + "\r\n\r\n" + text + "\r\n").encode()
    parts = ["Content-Type: multipart/mixed; boundary=b1", "", "--b1"]
    parts += ["Content-Type: text/plain; charset=utf-8", "", text]
    if html:
        style = 'style="margin:0 0 12px;font-family:Arial,sans-serif;font-size:14px"'
        body = " ".join(f"<p {style}>{sentence}</p>" for sentence in sentences)
        footer = f'<p {style}><a href="https://shop.example.com/orders/4711">Your order</a></p>'
        parts += ["--b1", "Content-Type: text/html; charset=utf-8", ""]
        parts += ['<html><head><meta charset="utf-8"></head><body>']
        parts += [*textwrap.wrap(body + " " + footer, 72), "</body></html>"]
    if attachment_bytes:
        encoded = base64.b64encode(draw.randbytes(attachment_bytes)).decode()
        parts += ["--b1", 'Content-Type: application/pdf; name="invoice.pdf"']
        parts += ["Content-Transfer-Encoding: base64", "", *textwrap.wrap(encoded, 76)]
    return ("\r\n".join([*headers, *parts, "--b1--"]) + "\r\n").encode()


def message(name: str, content: bytes, per_batch: int) -> Message:
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return Message(name, stuffed + b".\r\n", content, per_batch)


MESSAGES = [
    message("1 KB", text_email(paragraphs=3), per_batch=2000),
    # its last line ending in a dot over 1001 bytes before its end: past aiosmtpd's limit
    message("2 KB", text_email(paragraphs=2, html=True), per_batch=2000),
    message("20 KB", text_email(paragraphs=25, html=True), per_batch=400),
    message("100 KB", text_email(paragraphs=3, attachment_bytes=75_000), per_batch=200),
    message("1 MB", text_email(paragraphs=3, attachment_bytes=750_000), per_batch=25),
]


@contextlib.contextmanager
def reader_limit(variant: str) -> Iterator[None]:
    """read_data_section as the sink has it ("raised"), or with the reader at its own limit."""
    if variant == "raised":
        yield
        return

    @contextlib.contextmanager
    def unchanged(reader: asyncio.StreamReader, limit: int) -> Iterator[None]:
        yield

    with mock.patch.object(data_section, "stream_reader_limit", unchanged):
        yield


def read_whole(content: bytes, expected: Message) -> None:
    if content != expected.content:
        raise AssertionError(f"{expected.name}: read {len(content)} bytes, not the message")


async def over_loopback(message: Message) -> float:
    """Seconds for a batch of messages written over one loopback connection, each read by
    read_data_section and answered before the next is written."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                section = await read_data_section(reader, SIZE_LIMIT, LINE_LENGTH_LIMIT)
                read_whole(section.content, message)
                writer.write(b"250 OK\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=LINE_LENGTH_LIMIT)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        started = time.perf_counter()
        for _ in range(message.per_batch):
            writer.write(message.section)
            await writer.drain()
            await reader.readline()
        return time.perf_counter() - started
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()


async def in_memory(message: Message) -> float:
    """Seconds for a batch of messages, each fed whole to a reader and read."""
    reader = asyncio.StreamReader(limit=LINE_LENGTH_LIMIT)
    started = time.perf_counter()
    for _ in range(message.per_batch):
        reader.feed_data(message.section)
        section = await read_data_section(reader, SIZE_LIMIT, LINE_LENGTH_LIMIT)
        read_whole(section.content, message)
    return time.perf_counter() - started


Way = Callable[[Message], Awaitable[float]]
WAYS: dict[str, Way] = {"loopback": over_loopback, "in memory": in_memory}


Figures = dict[tuple[str, str], list[dict[str, float]]]


async def measure(rounds: int) -> Figures:
    """Microseconds per message of each variant, round by round, by (message, way)."""
    figures: Figures = {}
    for number in range(rounds + 1):
        order = VARIANTS if number % 2 == 0 else VARIANTS[::-1]
        for message in MESSAGES:
            for way_name, way in WAYS.items():
                this_round = {}
                for variant in order:
                    with reader_limit(variant):
                        seconds = await way(message)
                    this_round[variant] = 1e6 * seconds / message.per_batch
                if number > 0:  # the first round warms up
                    figures.setdefault((message.name, way_name), []).append(this_round)
    return figures


def report(figures: Figures) -> None:
    """Each variant's median, and the median of the rounds' ratios with their middle half: a
    round measures both variants one right after the other, so what slows a round slows both."""
    print(f"{'message':<8} {'way':<10} {'raised':>8} {'default':>8} {'default/raised':>24}")
    for (message_name, way_name), rounds in figures.items():
        raised, default = (statistics.median(r[variant] for r in rounds) for variant in VARIANTS)
        ratios = sorted(r["default"] / r["raised"] for r in rounds)
        first, _, third = statistics.quantiles(ratios, n=4)
        print(
            f"{message_name:<8} {way_name:<10} {raised:>8.1f} {default:>8.1f} "
            f"{statistics.median(ratios):>10.2f} ({first:.2f}-{third:.2f})"
        )
    sizes = ", ".join(f"{m.name} {len(m.section):,} bytes" for m in MESSAGES)
    print(f"us per message, median of {len(rounds)} rounds; sections: {sizes}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.data_section_limit")
    parser.add_argument("--rounds", type=int, default=21, help="alternating rounds (21)")
    arguments = parser.parse_args()
    report(run(measure(arguments.rounds)))


if __name__ == "__main__":
    main()
