"""Mailpit's JSON shapes built from stored messages (field names, addresses, dates, parts), and
its application information and chaos triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.smtp_sink.api import shapes
from services.smtp_sink.api.metrics import RuntimeStats
from services.smtp_sink.latency import LatencySummary
from services.smtp_sink.mailbox import (
    Envelope,
    MailboxPage,
    SearchPage,
    Sighting,
    SinkStats,
    StoredMessage,
    summarize,
)
from services.smtp_sink.mime import read_message
from services.smtp_sink.simulator.faults import ChaosTrigger, ChaosTriggers
from tests.unit.smtp_sink.messages import PLAIN, multipart_with_attachment

RECEIVED = datetime(2025, 11, 25, 18, 30, 1, 123000, tzinfo=UTC)
FIRST_SIGHTING = Sighting(1)

MESSAGE_SUMMARY_FIELDS = {
    "ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "Created",
    "Username", "Tags", "Size", "Attachments", "Snippet",
}  # fmt: skip
MESSAGE_FIELDS = {
    "ID", "MessageID", "From", "To", "Cc", "Bcc", "ReplyTo", "ReturnPath", "Subject",
    "ListUnsubscribe", "Date", "Tags", "Username", "Text", "HTML", "Size", "Inline",
    "Attachments",
}  # fmt: skip
DUPLICATE_FIELDS = {"Duplicate", "MessageIDCount"}


def stored(raw: bytes, sighting: Sighting = FIRST_SIGHTING, mail_from: str = "") -> StoredMessage:
    envelope = Envelope(mail_from, ("bob@example.com",))
    return StoredMessage(
        id="abc123",
        created=RECEIVED,
        envelope=envelope,
        summary=summarize(read_message(raw), envelope),
        size=len(raw),
        read=False,
        sighting=sighting,
    )


def test_message_summary_has_mailpits_fields_plus_the_duplicate_fields() -> None:
    summary = shapes.message_summary(stored(PLAIN)).model_dump(mode="json")

    assert set(summary) == MESSAGE_SUMMARY_FIELDS | DUPLICATE_FIELDS
    assert summary["ID"] == "abc123"
    assert summary["MessageID"] == "plain-1@example.com"
    assert summary["From"] == {"Name": "Ann Sender", "Address": "ann@example.com"}
    assert summary["To"] == [
        {"Name": "", "Address": "bob@example.com"},
        {"Name": "Carol", "Address": "carol@example.com"},
    ]
    assert summary["Created"] == "2025-11-25T18:30:01.123Z"  # Go's RFC3339Nano
    assert summary["Size"] == len(PLAIN)
    assert summary["Tags"] == []
    assert summary["Snippet"] == "First line of the body. Second line."
    assert summary["Duplicate"] is False
    assert summary["MessageIDCount"] == 1


def test_duplicate_fields_show_the_sighting() -> None:
    summary = shapes.message_summary(stored(PLAIN, Sighting(3)))

    assert summary.Duplicate is True
    assert summary.MessageIDCount == 3


def test_messages_summary_has_mailpits_fields() -> None:
    page = MailboxPage(messages=(stored(PLAIN),), total=7, unread=4)

    listing = shapes.messages_summary(page, start=2).model_dump(mode="json")

    assert set(listing) == {
        "total", "unread", "count", "messages_count", "messages_unread", "start", "tags",
        "messages",
    }  # fmt: skip
    assert (listing["total"], listing["unread"], listing["start"]) == (7, 4, 2)
    assert listing["count"] == 1, "Mailpit's legacy count: the messages on this page"
    assert (listing["messages_count"], listing["messages_unread"]) == (7, 4)
    assert listing["tags"] == []
    assert len(listing["messages"]) == 1


def test_message_has_mailpits_fields_plus_the_duplicate_fields() -> None:
    raw = multipart_with_attachment()

    message = shapes.message(stored(raw), read_message(raw)).model_dump(mode="json")

    assert set(message) == MESSAGE_FIELDS | DUPLICATE_FIELDS
    assert message["Text"] == "Plain version\nof the body\n"
    assert message["HTML"] == "<p>HTML <b>version</b> &amp; more</p>\n"
    assert message["Inline"] == []
    [attachment] = message["Attachments"]
    assert attachment["FileName"] == "resume.pdf"
    assert attachment["ContentType"] == "application/pdf"
    assert attachment["Size"] == len(b"%PDF-1.4 data")
    assert set(attachment["Checksums"]) == {"MD5", "SHA1", "SHA256"}


def test_message_date_is_the_date_header_else_the_time_received() -> None:
    with_date = shapes.message(stored(PLAIN), read_message(PLAIN))
    without_date = shapes.message(
        stored(b"Subject: x\r\n\r\n"), read_message(b"Subject: x\r\n\r\n")
    )

    assert with_date.Date == datetime(2025, 11, 25, 17, 0, tzinfo=UTC)
    assert without_date.Date == RECEIVED


def test_return_path_is_the_header_else_the_envelope_sender_else_from() -> None:
    with_header = b"Return-Path: <bounces@example.com>\r\n" + PLAIN

    assert shapes.message(stored(with_header), read_message(with_header)).ReturnPath == (
        "bounces@example.com"
    )
    assert shapes.message(
        stored(PLAIN, mail_from="env@example.com"), read_message(PLAIN)
    ).ReturnPath == ("env@example.com")
    assert shapes.message(stored(PLAIN), read_message(PLAIN)).ReturnPath == "ann@example.com"


def test_list_unsubscribe_links_are_listed() -> None:
    unsubscribe = shapes.list_unsubscribe(read_message(multipart_with_attachment()))

    assert unsubscribe.Links == ["mailto:leave@example.com", "https://example.com/leave"]
    assert unsubscribe.Errors == ""


def test_missing_list_unsubscribe_is_empty() -> None:
    unsubscribe = shapes.list_unsubscribe(read_message(PLAIN))

    assert unsubscribe.model_dump() == {"Header": "", "Links": [], "Errors": "", "HeaderPost": ""}


def test_headers_map_canonical_names_to_raw_values_sorted() -> None:
    raw = b"X-B: 2\r\nmessage-id: <m@x>\r\nX-B: 3\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"

    headers = shapes.headers(read_message(raw))

    assert headers == {
        "Message-Id": ["<m@x>"],
        "Subject": ["=?utf-8?q?caf=C3=A9?="],
        "X-B": ["2", "3"],
    }
    assert list(headers) == sorted(headers)


def test_search_summary_counts_the_matches_and_the_whole_mailbox() -> None:
    page = SearchPage(messages=(stored(PLAIN),), total=7, unread=4, matched=3, matched_unread=1)

    listing = shapes.search_summary(page, start=0).model_dump(mode="json")

    assert (listing["total"], listing["unread"]) == (7, 4)
    assert (listing["messages_count"], listing["messages_unread"]) == (3, 1)
    assert (listing["start"], listing["tags"], len(listing["messages"])) == (0, [], 1)


def test_stats_count_duplicates_and_show_the_latency_and_the_peak_rate() -> None:
    latency = LatencySummary(count=10, p50_seconds=0.02, p99_seconds=0.3)

    stats = shapes.stats(SinkStats(received=4, unique_message_ids=3), latency, max_rate_1s=3)

    assert stats.model_dump() == {
        "received": 4,
        "unique_message_ids": 3,
        "duplicates": 1,
        "latency": {"count": 10, "p50_seconds": 0.02, "p99_seconds": 0.3},
        "max_rate_1s": 3,
    }


def test_stats_without_latencies_have_no_percentiles() -> None:
    latency = LatencySummary(count=0, p50_seconds=None, p99_seconds=None)

    stats = shapes.stats(SinkStats(received=0, unique_message_ids=0), latency, max_rate_1s=0)

    assert stats.latency.model_dump() == {"count": 0, "p50_seconds": None, "p99_seconds": None}


def test_app_information_is_mailpits_with_the_mailbox_and_run_time_counts() -> None:
    runtime = RuntimeStats(
        uptime_seconds=61,
        memory_bytes=50_000_000,
        messages_deleted=2,
        smtp_accepted=5,
        smtp_accepted_bytes=4096,
        smtp_rejected=1,
    )

    info = shapes.app_information(
        version="kafka-email-pipeline 0.1.0 (SMTP sink, Mailpit API v1)",
        database="/run/sink/messages.sqlite3",
        database_size=8192,
        mailbox=MailboxPage((), total=3, unread=1),
        runtime=runtime,
    ).model_dump(mode="json")

    assert info == {
        "Version": "kafka-email-pipeline 0.1.0 (SMTP sink, Mailpit API v1)",
        "LatestVersion": "disabled",
        "Database": "/run/sink/messages.sqlite3",
        "DatabaseSize": 8192,
        "Messages": 3,
        "Unread": 1,
        "Tags": {},
        "RuntimeStats": {
            "Uptime": 61,
            "Memory": 50_000_000,
            "MessagesDeleted": 2,
            "SMTPAccepted": 5,
            "SMTPAcceptedSize": 4096,
            "SMTPRejected": 1,
            "SMTPIgnored": 0,
        },
    }


def test_chaos_triggers_are_mailpits_names() -> None:
    triggers = ChaosTriggers(recipient=ChaosTrigger(451, 50))

    assert shapes.chaos_triggers(triggers).model_dump(mode="json") == {
        "Sender": {"ErrorCode": 451, "Probability": 0},
        "Recipient": {"ErrorCode": 451, "Probability": 50},
        "Authentication": {"ErrorCode": 535, "Probability": 0},
    }


@pytest.mark.parametrize(
    ("moment", "written"),
    [
        (datetime(2025, 11, 25, 18, 30, 1, 123000, tzinfo=UTC), "2025-11-25T18:30:01.123Z"),
        (datetime(2025, 11, 25, 18, 30, 1, tzinfo=UTC), "2025-11-25T18:30:01Z"),
        (
            datetime(2025, 11, 25, 18, 0, tzinfo=timezone(timedelta(hours=1))),
            "2025-11-25T18:00:00+01:00",
        ),
        (
            datetime(2025, 11, 25, 18, 0, 0, 500, tzinfo=timezone(-timedelta(hours=5, minutes=30))),
            "2025-11-25T18:00:00.0005-05:30",
        ),
        (datetime(2025, 11, 25, 18, 0, 0, 120000), "2025-11-25T18:00:00.12Z"),
    ],
)
def test_times_are_written_as_gos_rfc3339nano(moment: datetime, written: str) -> None:
    assert shapes.rfc3339_nano(moment) == written
