"""The JSON the HTTP API answers with: Mailpit API v1's shapes, plus the sink's duplicate fields.

Field names are Mailpit's own (its swagger.json); the builders here are pure.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, PlainSerializer

from services.smtp_sink.api import metrics
from services.smtp_sink.latency import LatencySummary
from services.smtp_sink.mailbox import MailboxPage, SearchPage, SinkStats, StoredMessage
from services.smtp_sink.mime import Address, MimePart, ParsedMessage, canonical_header_name
from services.smtp_sink.simulator import faults

_LINK = re.compile(r"<([^>]*)>")


def rfc3339_nano(moment: datetime) -> str:
    """A time as Go's RFC3339Nano writes it, as Mailpit's JSON has it: no trailing zeros in
    the fraction, none at all for a whole second, Z for UTC (and for a time without a zone)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    fraction = f".{moment.microsecond:06d}".rstrip("0").rstrip(".")
    offset = moment.strftime("%z")
    zone = "Z" if moment.utcoffset() == timedelta(0) else f"{offset[:3]}:{offset[3:5]}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone


GoTime = Annotated[datetime, PlainSerializer(rfc3339_nano, return_type=str)]


class MailAddress(BaseModel):
    Name: str
    Address: str


class Checksums(BaseModel):
    MD5: str
    SHA1: str
    SHA256: str


class Attachment(BaseModel):
    PartID: str
    FileName: str
    ContentType: str
    ContentID: str
    Size: int
    Checksums: Checksums


class ListUnsubscribe(BaseModel):
    Header: str
    Links: list[str]
    Errors: str
    HeaderPost: str


class MessageSummary(BaseModel):
    ID: str
    MessageID: str
    Read: bool
    From: MailAddress
    To: list[MailAddress]
    Cc: list[MailAddress]
    Bcc: list[MailAddress]
    ReplyTo: list[MailAddress]
    Subject: str
    Created: GoTime
    Username: str
    Tags: list[str]
    Size: int
    Attachments: int
    Snippet: str
    # The sink's own: whether an earlier stored message had this Message-ID, and how many have.
    Duplicate: bool
    MessageIDCount: int


class MessagesSummary(BaseModel):
    total: int
    unread: int
    # The messages on this page: gone from Mailpit's swagger.json but still in its answers,
    # where clients written for older Mailpits read it.
    count: int
    messages_count: int
    messages_unread: int
    start: int
    tags: list[str]
    messages: list[MessageSummary]


class Message(BaseModel):
    ID: str
    MessageID: str
    From: MailAddress
    To: list[MailAddress]
    Cc: list[MailAddress]
    Bcc: list[MailAddress]
    ReplyTo: list[MailAddress]
    ReturnPath: str
    Subject: str
    ListUnsubscribe: ListUnsubscribe
    Date: GoTime
    Tags: list[str]
    Username: str
    Text: str
    HTML: str
    Size: int
    Inline: list[Attachment]
    Attachments: list[Attachment]
    Duplicate: bool
    MessageIDCount: int


class MessageWithRaw(Message):
    """GET /api/v1/messages/{ID}, the sink's own route: Mailpit's Message plus the raw source."""

    Raw: str


class Latency(BaseModel):
    """The end-to-end latency (X-Accepted-At to arrival) of the latest messages that carried it."""

    count: int
    p50_seconds: float | None
    p99_seconds: float | None


class Stats(BaseModel):
    """GET /api/v1/stats, the sink's own route: Mailpit has no duplicate witness."""

    received: int
    unique_message_ids: int
    duplicates: int
    latency: Latency
    max_rate_1s: int  # the most MAIL FROMs in any sliding second, since start or emptied


class RuntimeStats(BaseModel):
    Uptime: int
    Memory: int
    MessagesDeleted: int
    SMTPAccepted: int
    SMTPAcceptedSize: int
    SMTPRejected: int
    SMTPIgnored: int


class AppInformation(BaseModel):
    """GET /api/v1/info: Mailpit's application information, of the sink."""

    Version: str
    LatestVersion: str
    Database: str
    DatabaseSize: int
    Messages: int
    Unread: int
    Tags: dict[str, int]
    RuntimeStats: RuntimeStats


class ChaosTrigger(BaseModel):
    ErrorCode: int
    Probability: int


class ChaosTriggers(BaseModel):
    """GET and PUT /api/v1/chaos: Mailpit's chaos triggers."""

    Sender: ChaosTrigger
    Recipient: ChaosTrigger
    Authentication: ChaosTrigger


def message_summary(stored: StoredMessage) -> MessageSummary:
    summary = stored.summary
    return MessageSummary(
        ID=stored.id,
        MessageID=summary.message_id,
        Read=stored.read,
        From=_address(summary.sender),
        To=_addresses(summary.to),
        Cc=_addresses(summary.cc),
        Bcc=_addresses(summary.bcc),
        ReplyTo=_addresses(summary.reply_to),
        Subject=summary.subject,
        Created=stored.created,
        Username="",
        Tags=[],
        Size=stored.size,
        Attachments=summary.attachments,
        Snippet=summary.snippet,
        Duplicate=stored.sighting.duplicate,
        MessageIDCount=stored.sighting.message_id_count,
    )


def messages_summary(page: MailboxPage, start: int) -> MessagesSummary:
    return MessagesSummary(
        total=page.total,
        unread=page.unread,
        count=len(page.messages),
        messages_count=page.total,
        messages_unread=page.unread,
        start=start,
        tags=[],
        messages=[message_summary(stored) for stored in page.messages],
    )


def search_summary(page: SearchPage, start: int) -> MessagesSummary:
    """Mailpit's search answer: messages_count counts the matches, total the whole mailbox."""
    return MessagesSummary(
        total=page.total,
        unread=page.unread,
        count=len(page.messages),
        messages_count=page.matched,
        messages_unread=page.matched_unread,
        start=start,
        tags=[],
        messages=[message_summary(stored) for stored in page.messages],
    )


def message(stored: StoredMessage, parsed: ParsedMessage) -> Message:
    """Mailpit's full Message: addresses from the stored summary, bodies and parts from the source.

    ReturnPath is the Return-Path header, else the envelope sender (what a delivering MTA
    would write), else the From address; Date is the Date header, else the time received.
    """
    summary = stored.summary
    return Message(
        ID=stored.id,
        MessageID=summary.message_id,
        From=_address(summary.sender),
        To=_addresses(summary.to),
        Cc=_addresses(summary.cc),
        Bcc=_addresses(summary.bcc),
        ReplyTo=_addresses(summary.reply_to),
        ReturnPath=parsed.return_path or stored.envelope.mail_from or summary.sender.address,
        Subject=summary.subject,
        ListUnsubscribe=list_unsubscribe(parsed),
        Date=parsed.date or stored.created,
        Tags=[],
        Username="",
        Text=parsed.text,
        HTML=parsed.html,
        Size=stored.size,
        Inline=[attachment(part) for part in parsed.inline],
        Attachments=[attachment(part) for part in parsed.attachments],
        Duplicate=stored.sighting.duplicate,
        MessageIDCount=stored.sighting.message_id_count,
    )


def headers(parsed: ParsedMessage) -> dict[str, list[str]]:
    """Mailpit's MessageHeadersResponse: canonical header name -> raw values, names sorted."""
    collected: dict[str, list[str]] = {}
    for name, value in parsed.headers:
        collected.setdefault(canonical_header_name(name), []).append(value)
    return dict(sorted(collected.items()))


def list_unsubscribe(parsed: ParsedMessage) -> ListUnsubscribe:
    header = parsed.header("List-Unsubscribe")
    if not header:
        return ListUnsubscribe(Header="", Links=[], Errors="", HeaderPost="")
    links = [link.strip() for link in _LINK.findall(header) if link.strip()]
    return ListUnsubscribe(
        Header=header,
        Links=links,
        Errors="" if links else "No valid unsubscribe links found",
        HeaderPost=parsed.header("List-Unsubscribe-Post"),
    )


def attachment(part: MimePart) -> Attachment:
    content = part.content()
    return Attachment(
        PartID=part.part_id,
        FileName=part.file_name or part.content_id,
        ContentType=part.content_type,
        ContentID=part.content_id,
        Size=len(content),
        Checksums=Checksums(
            MD5=hashlib.md5(content, usedforsecurity=False).hexdigest(),
            SHA1=hashlib.sha1(content, usedforsecurity=False).hexdigest(),
            SHA256=hashlib.sha256(content).hexdigest(),
        ),
    )


def stats(sink_stats: SinkStats, latency: LatencySummary, max_rate_1s: int) -> Stats:
    return Stats(
        received=sink_stats.received,
        unique_message_ids=sink_stats.unique_message_ids,
        duplicates=sink_stats.duplicates,
        latency=Latency(
            count=latency.count,
            p50_seconds=latency.p50_seconds,
            p99_seconds=latency.p99_seconds,
        ),
        max_rate_1s=max_rate_1s,
    )


def app_information(
    version: str,
    database: str,
    database_size: int,
    mailbox: MailboxPage,
    runtime: metrics.RuntimeStats,
) -> AppInformation:
    """The sink never asks the internet for a newer release: LatestVersion is Mailpit's
    "disabled"; it has no tags, and ignores no message (it keeps duplicates, and flags them)."""
    return AppInformation(
        Version=version,
        LatestVersion="disabled",
        Database=database,
        DatabaseSize=database_size,
        Messages=mailbox.total,
        Unread=mailbox.unread,
        Tags={},
        RuntimeStats=RuntimeStats(
            Uptime=runtime.uptime_seconds,
            Memory=runtime.memory_bytes,
            MessagesDeleted=runtime.messages_deleted,
            SMTPAccepted=runtime.smtp_accepted,
            SMTPAcceptedSize=runtime.smtp_accepted_bytes,
            SMTPRejected=runtime.smtp_rejected,
            SMTPIgnored=0,
        ),
    )


def chaos_triggers(triggers: faults.ChaosTriggers) -> ChaosTriggers:
    return ChaosTriggers(
        Sender=_chaos_trigger(triggers.sender),
        Recipient=_chaos_trigger(triggers.recipient),
        Authentication=_chaos_trigger(triggers.authentication),
    )


def _chaos_trigger(trigger: faults.ChaosTrigger) -> ChaosTrigger:
    return ChaosTrigger(ErrorCode=trigger.error_code, Probability=trigger.probability)


def _address(address: Address) -> MailAddress:
    return MailAddress(Name=address.name, Address=address.address)


def _addresses(addresses: Iterable[Address]) -> list[MailAddress]:
    return [_address(address) for address in addresses]
