"""The printed log: a compact block per message, a loud line for a duplicate Message-ID."""

from __future__ import annotations

from datetime import UTC, datetime

from services.smtp_sink.mailbox import Envelope, Sighting, StoredMessage, summarize
from services.smtp_sink.mime import read_message
from services.smtp_sink.smtp.report import arrival_block, refusal_line
from tests.unit.smtp_sink.messages import PLAIN

ENVELOPE = Envelope("ann@example.com", ("bob@example.com",))
FIRST_SIGHTING = Sighting(1)


def stored(raw: bytes, sighting: Sighting = FIRST_SIGHTING) -> StoredMessage:
    return StoredMessage(
        id="abc123",
        created=datetime(2025, 11, 25, 18, 30, 1, 123000, tzinfo=UTC),
        envelope=ENVELOPE,
        summary=summarize(read_message(raw), ENVELOPE),
        size=len(raw),
        read=False,
        sighting=sighting,
    )


def test_block_shows_time_message_id_from_to_subject_and_first_line() -> None:
    block = arrival_block(stored(PLAIN))

    assert block.splitlines() == [
        f"=== 2025-11-25 18:30:01.123 UTC  id abc123  {len(PLAIN)} bytes",
        "    Message-ID: <plain-1@example.com>",
        "    From:       Ann Sender <ann@example.com>",
        "    To:         bob@example.com, Carol <carol@example.com>, dan@example.com",
        "    Subject:    Hello Bob",
        "    Text:       First line of the body.",
    ]
    assert block.endswith("\n")


def test_duplicate_is_flagged_loudly_with_its_count() -> None:
    block = arrival_block(stored(PLAIN, Sighting(2)))

    assert block.splitlines()[-1] == "!!! DUPLICATE Message-ID <plain-1@example.com> (seen 2 times)"


def test_missing_message_id_and_from_are_shown_plainly() -> None:
    block = arrival_block(stored(b"\r\nbody"))

    assert "    Message-ID: (none)" in block
    assert "    From:       ann@example.com" in block


def test_control_characters_never_reach_the_terminal() -> None:
    block = arrival_block(stored(b"Subject: \x1b[31mred\x07\r\n\r\nx"))

    assert "\x1b" not in block
    assert "\x07" not in block
    assert "    Subject:    ?[31mred?" in block


def test_long_values_are_cut() -> None:
    block = arrival_block(stored(b"Subject: " + b"s" * 500 + b"\r\n\r\n"))

    assert "    Subject:    " + "s" * 120 + "...\n" in block


def test_refused_recipient_line() -> None:
    line = refusal_line("550 5.1.1 no", ENVELOPE, recipient="x@example.com")

    assert line == "--- refused RCPT from ann@example.com to x@example.com: 550 5.1.1 no\n"


def test_refused_message_line() -> None:
    line = refusal_line("451 4.3.0 later", Envelope("", ("a@x", "b@x")))

    assert line == "--- refused message from <> to a@x, b@x: 451 4.3.0 later\n"
