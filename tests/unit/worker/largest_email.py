"""The largest email the API accepts, and how long the worker takes to render it.

`python -m tests.unit.worker.largest_email` renders it (and an email with every header field at
its own bound, past the schema's total) and prints the time; test_mime checks what it renders.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from services.worker.mime import render_email, rendered_address
from shared.schema import (
    MAX_DISPLAY_NAME_LENGTH,
    MAX_HEADER_COUNT,
    MAX_HEADER_FIELDS_OCTETS,
    MAX_HEADER_NAME_LENGTH,
    MAX_LOCAL_PART_OCTETS,
    MAX_RECIPIENTS,
    MAX_REPLY_TO,
    MAX_SUBJECT_LENGTH,
    MAX_TAGS,
    EmailRecord,
    PoisonRecord,
    mailbox,
    parse_record,
)
from shared.settings import Settings

DOMAIN = "pipeline.test"
API_MAX_BODY_BYTES: int = Settings.model_fields["api_max_body_bytes"].default
# Non-ASCII of two, three and four UTF-8 octets, with spaces and specials: the costliest text.
COSTLY_TEXT = 'Zoë "Müller", 李小龍 😀 '


def text_of(length: int, unit: str = COSTLY_TEXT) -> str:
    return (unit * (length // len(unit) + 1))[:length]


def header_fields(name_length: int, value_length: int) -> dict[str, Any]:
    """Every count at its bound: recipients, Reply-To, custom headers and tags; each address
    with an IDN domain and a local part of RFC 5321's longest."""

    def address(n: int) -> str:
        local_part = f"{n:03}" + "l" * (MAX_LOCAL_PART_OCTETS - 3)
        name = text_of(name_length).replace("\\", "").replace('"', "'")
        return f'"{name}" <{local_part}@пример.рф>'

    to_count = cc_count = (MAX_RECIPIENTS - 10) // 2
    return {
        "from": address(0),
        "to": [address(n) for n in range(to_count)],
        "cc": [address(n) for n in range(to_count, to_count + cc_count)],
        "bcc": [address(n) for n in range(to_count + cc_count, MAX_RECIPIENTS)],
        "reply_to": [address(n) for n in range(MAX_REPLY_TO)],
        "subject": text_of(MAX_SUBJECT_LENGTH),
        "headers": {
            f"X-Custom-{n:02}".ljust(MAX_HEADER_NAME_LENGTH, "x"): text_of(value_length)
            for n in range(MAX_HEADER_COUNT)
        },
        "tags": [f"tag-{n:02}-" + text_of(20) for n in range(MAX_TAGS)],
    }


def header_octets(fields: dict[str, Any]) -> int:
    """What the schema counts against MAX_HEADER_FIELDS_OCTETS (Bcc is not a header)."""
    values = [
        fields["from"], *fields["to"], *fields["cc"], *fields["reply_to"], fields["subject"],
        *fields["tags"], *fields["headers"], *fields["headers"].values(),
    ]  # fmt: skip
    return sum(len(value.encode()) for value in values)


def largest_email(api_max_body_bytes: int = API_MAX_BODY_BYTES) -> EmailRecord:
    """The header fields as long as the schema's total allows, display names and custom
    headers' values sharing it, and text and html filling the rest of API_MAX_BODY_BYTES."""
    length = MAX_DISPLAY_NAME_LENGTH
    while header_octets(fields := header_fields(length, 2 * length)) > MAX_HEADER_FIELDS_OCTETS:
        length -= 1
    body = text_of(api_max_body_bytes // 2, "Grüße aus Köln, 東京 ☕ — a line of text.\n")
    while (excess := len(request_body(fields, body)) - api_max_body_bytes) > 0:
        body = body[: len(body) - excess // 8 - 1]  # in text and html, up to 4 octets a character
    return EmailRecord.model_validate(
        {
            **fields,
            "message_id": "m" * 200,
            "created_at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
            "text": body,
            "html": body,
        }
    )


def request_body(fields: dict[str, Any], body: str) -> bytes:
    return json.dumps({**fields, "text": body, "html": body}, ensure_ascii=False).encode()


def past_the_total(api_max_body_bytes: int = API_MAX_BODY_BYTES) -> EmailRecord:
    """Past the schema's total for the header fields (so built unchecked): the renderer's own
    cost, which grows with the text and no faster."""
    fields = header_fields(MAX_DISPLAY_NAME_LENGTH, MAX_SUBJECT_LENGTH)
    return largest_email(api_max_body_bytes).model_copy(
        update={("sender" if name == "from" else name): value for name, value in fields.items()}
    )


def worker_milliseconds(record: EmailRecord) -> tuple[float, float]:
    """(reading its record, rendering it), as the worker meets a new email: nothing cached.
    A record over the schema's bounds is refused as poison, in the time given for reading."""
    _, value = record.to_kafka()
    mailbox.cache_clear()
    rendered_address.cache_clear()
    started = time.perf_counter()
    with contextlib.suppress(PoisonRecord):
        parse_record(value)
    read = time.perf_counter()
    render_email(record, DOMAIN)
    return (read - started) * 1e3, (time.perf_counter() - read) * 1e3


def main(runs: int) -> None:
    for title, record in [
        ("The largest email the API accepts", largest_email()),
        ("Every header field at its own bound (refused: over the total)", past_the_total()),
    ]:
        outgoing = render_email(record, DOMAIN)
        header_section = outgoing.data.split(b"\r\n\r\n", 1)[0]
        reads, renders = zip(*(worker_milliseconds(record) for _ in range(runs)), strict=True)
        print(
            f"{title}: {len(outgoing.data):,} octets, {len(header_section):,} of them headers.\n"
            f"  rendered in {statistics.median(renders):.1f} ms (slowest {max(renders):.1f}), "
            f"its record read in {statistics.median(reads):.1f} ms (slowest {max(reads):.1f}); "
            f"medians of {runs} runs"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
