"""Summaries of arrivals and the duplicate rule: the sink counts sightings of each Message-ID."""

from __future__ import annotations

from services.smtp_sink.mailbox import (
    Envelope,
    SinkStats,
    sight,
    summarize,
    unread_summary,
)
from services.smtp_sink.mime import Address, read_message
from tests.unit.smtp_sink.messages import PLAIN, multipart_with_attachment

ENVELOPE = Envelope("ann@example.com", ("bob@example.com", "carol@example.com", "dan@example.com"))


def test_first_sighting_of_a_message_id_is_not_a_duplicate() -> None:
    sighting = sight("m-1@example.com", earlier_count=0)

    assert sighting.message_id_count == 1
    assert not sighting.duplicate


def test_second_sighting_of_a_message_id_is_a_duplicate() -> None:
    sighting = sight("m-1@example.com", earlier_count=1)

    assert sighting.message_id_count == 2
    assert sighting.duplicate


def test_a_message_without_message_id_is_never_a_duplicate() -> None:
    assert not sight("", earlier_count=5).duplicate


def test_duplicates_are_received_minus_unique() -> None:
    assert SinkStats(received=5, unique_message_ids=3).duplicates == 2


def test_summary_holds_the_listing_fields() -> None:
    summary = summarize(read_message(PLAIN), ENVELOPE)

    assert summary.message_id == "plain-1@example.com"
    assert summary.subject == "Hello Bob"
    assert summary.sender == Address("Ann Sender", "ann@example.com")
    assert summary.first_line == "First line of the body."
    assert summary.attachments == 0


def test_envelope_recipients_in_no_header_are_shown_as_bcc_like_mailpit() -> None:
    envelope = Envelope("ann@example.com", ("BOB@example.com", "hidden@example.com"))

    summary = summarize(read_message(PLAIN), envelope)

    assert summary.bcc == (Address("", "hidden@example.com"),)


def test_attachments_are_counted() -> None:
    assert summarize(read_message(multipart_with_attachment()), ENVELOPE).attachments == 1


def test_a_message_without_from_has_an_empty_sender() -> None:
    assert summarize(read_message(b"\r\nbody"), ENVELOPE).sender == Address("", "")


def test_unread_summary_keeps_the_envelope() -> None:
    summary = unread_summary(ENVELOPE)

    assert summary.sender == Address("", "ann@example.com")
    assert [address.address for address in summary.bcc] == list(ENVELOPE.rcpt_tos)
    assert summary.message_id == ""
