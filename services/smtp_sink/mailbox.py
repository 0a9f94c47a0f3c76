"""What the sink knows about a message: its arrival, its summary, and how often its Message-ID came.

Plain records and pure rules; the store keeps them and the HTTP API shows them in Mailpit's shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.smtp_sink.mime import Address, ParsedMessage

NO_SENDER = Address("", "")


@dataclass(frozen=True)
class Envelope:
    """What the SMTP client said in MAIL FROM and the RCPT TOs the sink accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    """The fields a listing shows, computed once when the message arrives."""

    message_id: str
    subject: str
    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    snippet: str
    first_line: str
    attachments: int


@dataclass(frozen=True)
class Arrival:
    """A message the sink has received and is about to store."""

    id: str
    created: datetime
    envelope: Envelope
    summary: Summary
    raw: bytes
    search_text: str  # what a search's free words match: services.smtp_sink.api.search


@dataclass(frozen=True)
class Sighting:
    """How many stored messages carry this Message-ID, this one included."""

    message_id_count: int

    @property
    def duplicate(self) -> bool:
        return self.message_id_count > 1


@dataclass(frozen=True)
class StoredMessage:
    id: str
    created: datetime
    envelope: Envelope
    summary: Summary
    size: int
    read: bool
    sighting: Sighting


@dataclass(frozen=True)
class MailboxPage:
    messages: tuple[StoredMessage, ...]
    total: int
    unread: int


@dataclass(frozen=True)
class SearchPage:
    """A page of the messages matching a search, with the mailbox's counts and the matches'."""

    messages: tuple[StoredMessage, ...]
    total: int
    unread: int
    matched: int
    matched_unread: int


@dataclass(frozen=True)
class SinkStats:
    received: int
    unique_message_ids: int

    @property
    def duplicates(self) -> int:
        return self.received - self.unique_message_ids


def sight(message_id: str, earlier_count: int) -> Sighting:
    """The sighting of one more message with this Message-ID, after earlier_count stored ones.

    A message without a Message-ID cannot be recognised again, so it is never a duplicate.
    """
    return Sighting(earlier_count + 1 if message_id else 1)


def summarize(parsed: ParsedMessage, envelope: Envelope) -> Summary:
    """The listing fields of a message, with Mailpit's Bcc rule applied.

    Like Mailpit, envelope recipients named in no To, Cc or Bcc header are shown as Bcc.
    """
    named = {address.address.lower() for address in (*parsed.to, *parsed.cc, *parsed.bcc)}
    hidden = tuple(
        Address("", recipient) for recipient in envelope.rcpt_tos if recipient.lower() not in named
    )
    return Summary(
        message_id=parsed.message_id,
        subject=parsed.subject,
        sender=parsed.sender or NO_SENDER,
        to=parsed.to,
        cc=parsed.cc,
        bcc=parsed.bcc + hidden,
        reply_to=parsed.reply_to,
        snippet=parsed.snippet,
        first_line=parsed.first_line,
        attachments=len(parsed.attachments),
    )


def unread_summary(envelope: Envelope) -> Summary:
    """The summary of a message that could not be read: only the envelope is known."""
    return Summary(
        message_id="",
        subject="",
        sender=Address("", envelope.mail_from),
        to=(),
        cc=(),
        bcc=tuple(Address("", recipient) for recipient in envelope.rcpt_tos),
        reply_to=(),
        snippet="",
        first_line="",
        attachments=0,
    )
