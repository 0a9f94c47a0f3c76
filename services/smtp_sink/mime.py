"""Reading raw message bytes into the headers, addresses, bodies and parts the sink shows.

Pure and forgiving: any bytes give a ParsedMessage (garbage gives empty fields), never an error.
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import quopri
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from functools import cached_property, partial

# compat32 is several times faster than the modern policy and keeps header values raw, which
# both the /headers route (Mailpit returns raw values) and our own decoding below want.
_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WHITESPACE = re.compile(r"\s+")
_VISIBLE = re.compile(r"\S")
_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # where splitlines() splits
_SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_SCRIPT_OR_STYLE_START = re.compile(r"<(script|style)\b", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_BLOCK_END = re.compile(r"<(br|/p|/div|/tr|/h[1-6]|/li)\b[^>]*>", re.IGNORECASE)
_BARE_ADDRESS = re.compile(r'[^\s@<>()\[\],;:"\\]+@[^\s@<>()\[\],;:"\\]+')
_NAMED_ADDRESS = re.compile(
    r'(?P<name>[^\s<>()\[\],;:"\\@](?:[^<>()\[\],;:"\\@]*[^\s<>()\[\],;:"\\@])?)\s*'
    r'<(?P<address>[^\s@<>()\[\],;:"\\]+@[^\s@<>()\[\],;:"\\]+)>'
)
SNIPPET_CHARS = 200  # Mailpit's CreateSnippet limit
# A message this large is read in a thread, not on the event loop: reading 10 MB takes a second
# of CPU, which would hold up every SMTP session and HTTP request the loop serves. A smaller one
# takes a few milliseconds at most, less than a thread hop would add.
LARGE_MESSAGE_BYTES = 256 * 1024
# The most characters one regular expression pass over a large body takes at once: a thread
# reading a large message holds the GIL through each pass, and the event loop waits for it.
PASS_CHARS = 256 * 1024
# The single-part fast path: a header block as the email package reads one, a text type with
# at most a charset, the encodings whose bytes are the text, and what sends a message elsewhere.
# A field: "name:" (printable ASCII but the colon), its value's first line, and continuation
# lines starting with a space or tab; no CR or LF but in a CRLF.
_FIELD = r"[!-9;-~]+:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*"
_HEADER_BLOCK = re.compile(rf"{_FIELD}(?:\r\n{_FIELD})*")
# The name and the value (without the blanks after the colon) of each field of such a block.
_HEADER_FIELD = re.compile(r"^([!-9;-~]+):[ \t]*([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.MULTILINE)
_SIMPLE_TEXT_TYPE = re.compile(
    r"\s*text/(?P<subtype>plain|html)\s*"
    r'(?:;\s*charset\s*=\s*(?:"(?P<quoted>[A-Za-z0-9._:-]+)"|(?P<bare>[A-Za-z0-9._:-]+))\s*)?',
    re.IGNORECASE,
)
_PLAIN_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_PARTS_AND_NAMES = ("content-disposition", "content-id")
_ONE_EACH = ("content-type", "content-transfer-encoding")


@dataclass(frozen=True)
class Address:
    name: str
    address: str


@dataclass(frozen=True)
class MimePart:
    """An attachment or inline part; its content is decoded only when asked for."""

    part_id: str
    content_type: str
    file_name: str
    content_id: str
    source: Message

    def content(self) -> bytes:
        if self.content_type == "message/rfc822":
            enclosed = self.source.get_payload(0)
            return enclosed.as_bytes() if isinstance(enclosed, Message) else b""
        payload = self.source.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else b""


@dataclass(frozen=True)
class ParsedMessage:
    headers: tuple[tuple[str, str], ...]  # (name, raw value, unfolded) in their order
    message_id: str  # without the angle brackets, as Mailpit stores it
    subject: str
    sender: Address | None  # the From header
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    return_path: str
    text: str
    html: str
    inline: tuple[MimePart, ...]
    attachments: tuple[MimePart, ...]

    def header(self, name: str) -> str:
        """The first value of a header (case-insensitive), or ''."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), "")

    @property
    def date(self) -> datetime | None:
        """The Date header; parsed only when asked for, as listings do not show it."""
        return _date(self.header("Date"))

    # Cached: the snippet and the search text both read it, and HTML is slow to strip.
    @cached_property
    def body_text(self) -> str:
        """The HTML body as text if there is one, else the text body: what Mailpit searches."""
        return html_to_text(self.html) if self.html.strip() else self.text

    @property
    def snippet(self) -> str:
        """Mailpit's snippet: the start of the body text, whitespace collapsed."""
        body = self.body_text
        # Collapsing the start of the body gives the start of the collapsed body: a large body
        # needs the few characters the snippet shows, not a pass over all of its megabytes.
        start_chars = 4 * SNIPPET_CHARS
        while True:
            collapsed = _WHITESPACE.sub(" ", body[:start_chars].replace("\ufeff", " ")).strip()
            if len(collapsed) > SNIPPET_CHARS:
                return collapsed[:SNIPPET_CHARS] + "..."
            if start_chars >= len(body):
                return collapsed
            start_chars *= 4

    @property
    def first_line(self) -> str:
        """The first non-blank line of the text body, for the printed log."""
        source = self.text if self.text.strip() else html_to_text(self.html)
        # The line around the first visible character: what the first non-blank line of
        # splitlines() is, without splitting a large body into all of its lines.
        visible = _VISIBLE.search(source)
        if visible is None:
            return ""
        line_break = _LINE_BREAK.search(source, visible.start())
        return source[visible.start() : line_break.start() if line_break else None].strip()


def read_message(raw: bytes) -> ParsedMessage:
    return _read_single_text_part(raw) or _read_any(raw)


def _read_any(raw: bytes) -> ParsedMessage:
    message = _PARSER.parsebytes(raw)
    headers = tuple((name, _header_value(value)) for name, value in message.raw_items())
    bodies = _Bodies()
    bodies.walk(message, part_id="")
    return _parsed(headers, bodies.text, bodies.html, bodies.inline, bodies.attachments)


def _read_single_text_part(raw: bytes) -> ParsedMessage | None:
    """Most email is one text/plain or text/html part with plain headers: read it without the
    email package (a third of the sink's time), giving exactly what _read_any gives (a test
    holds them to it). None for anything else."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    block = raw[:end].decode("ascii", errors="surrogateescape")
    if _HEADER_BLOCK.fullmatch(block) is None:
        return None  # a line that is no field, or a bare CR or LF: the email package decides
    raw_items = _HEADER_FIELD.findall(block)
    by_name: dict[str, list[str]] = {}
    for name, value in raw_items:
        by_name.setdefault(name.lower(), []).append(value)
    if any(name in by_name for name in _PARTS_AND_NAMES) or any(
        len(by_name.get(name, ())) > 1 for name in _ONE_EACH
    ):
        return None
    content_type = _SIMPLE_TEXT_TYPE.fullmatch(
        _unfold(by_name.get("content-type", ["text/plain"])[0])
    )
    encoding = by_name.get("content-transfer-encoding", [""])[0].lower()
    if content_type is None or encoding not in _PLAIN_ENCODINGS | {"quoted-printable"}:
        return None
    payload = raw[end + 4 :]
    if encoding == "quoted-printable":
        payload = quopri.decodestring(payload)
    charset = (content_type["quoted"] or content_type["bare"] or "utf-8").lower()
    try:
        decoded = payload.decode(charset, errors="replace")
    except LookupError:
        decoded = payload.decode("utf-8", errors="replace")
    body = _lf_line_ends(decoded)
    headers = tuple((name, _header_value(value)) for name, value in raw_items)
    if content_type["subtype"].lower() == "html":
        return _parsed(headers, "", body, [], [])
    return _parsed(headers, body, "", [], [])


def _parsed(
    headers: tuple[tuple[str, str], ...],
    text: str,
    html_body: str,
    inline: list[MimePart],
    attachments: list[MimePart],
) -> ParsedMessage:
    parsed_headers = _Headers(headers)
    return ParsedMessage(
        headers=headers,
        message_id=parsed_headers.first("Message-ID").strip().strip("<>"),
        subject=decode_words(parsed_headers.first("Subject")),
        sender=_sender(parsed_headers.first("From")),
        to=parsed_headers.addresses("To"),
        cc=parsed_headers.addresses("Cc"),
        bcc=parsed_headers.addresses("Bcc"),
        reply_to=parsed_headers.addresses("Reply-To"),
        return_path=parsed_headers.first("Return-Path").strip().strip("<>"),
        text=text if text or not html_body else html_to_text(html_body),
        html=html_body,
        inline=tuple(inline),
        attachments=tuple(attachments),
    )


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words (=?utf-8?q?...?=); undecodable input stays as it is."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeError, ValueError, AssertionError):
        return value


def html_to_text(markup: str) -> str:
    without_code = _without_scripts_and_styles(markup)
    with_breaks = _replace_tags(_BLOCK_END, "\n", without_code)
    return html.unescape(_replace_tags(_TAG, "", with_breaks)).strip()


def _without_scripts_and_styles(markup: str) -> str:
    """_SCRIPT_OR_STYLE.sub(" ", markup) in time linear in the markup.

    The expression alone looks for the end of an element that is never closed again from every
    later opening of its kind: a megabyte of "<script" would take hours. Here an element with no
    end is looked for once; a later opening of the same name (as the backreference compares
    it) cannot find an end either.
    """
    kept: list[str] = []
    copied_up_to = searched_from = 0
    unclosed: set[str] = set()
    while (start := _SCRIPT_OR_STYLE_START.search(markup, searched_from)) is not None:
        name = start[1].lower()
        element = None if name in unclosed else _SCRIPT_OR_STYLE.match(markup, start.start())
        if element is None:
            unclosed.add(name)
            searched_from = start.start() + 1
            continue
        kept += (markup[copied_up_to : element.start()], " ")
        copied_up_to = searched_from = element.end()
    kept.append(markup[copied_up_to:])
    return "".join(kept)


def _replace_tags(tag: re.Pattern[str], replacement: str, markup: str) -> str:
    """tag.sub(replacement, markup), for a tag whose match runs from a "<" to the first ">"
    after it, in time linear in the markup.

    After the last ">" no match can end, so nothing there is tried: each "<" there would scan
    to the end of the markup, and a megabyte of "<" would take hours.
    """
    end_of_tags = markup.rfind(">") + 1
    replaced = _in_passes(partial(tag.sub, replacement), markup[:end_of_tags], ">")
    return replaced + markup[end_of_tags:]


def _in_passes(step: Callable[[str], str], text: str, cut_after: str) -> str:
    """step(text) for a step that never acts across the end of a `cut_after` character: a large
    text in passes of about PASS_CHARS, cut right after one."""
    done: list[str] = []
    start = 0
    while start < len(text):
        end = text.find(cut_after, start + PASS_CHARS) + 1 or len(text)
        done.append(step(text[start:end]))
        start = end
    return "".join(done)


def canonical_header_name(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey, which Mailpit's /headers uses: message-id -> Message-Id."""
    if not name or any(not (char.isascii() and (char.isalnum() or char == "-")) for char in name):
        return name
    return "-".join(word[:1].upper() + word[1:].lower() for word in name.split("-"))


class _Headers:
    def __init__(self, headers: tuple[tuple[str, str], ...]) -> None:
        self._first_values: dict[str, str] = {}
        for name, value in headers:
            self._first_values.setdefault(name.lower(), value)

    def first(self, name: str) -> str:
        return self._first_values.get(name.lower(), "")

    def addresses(self, name: str) -> tuple[Address, ...]:
        return _addresses(self.first(name))


class _Bodies:
    """Sorts the leaf parts of a MIME tree into text, HTML, inline parts and attachments."""

    def __init__(self) -> None:
        self.text = ""
        self.html = ""
        self.inline: list[MimePart] = []
        self.attachments: list[MimePart] = []

    def walk(self, part: Message, part_id: str) -> None:
        content_type = part.get_content_type()
        if content_type != "message/rfc822" and part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                for index, child in enumerate(children, start=1):
                    if isinstance(child, Message):
                        self.walk(child, f"{part_id}.{index}" if part_id else str(index))
            return
        disposition = part.get_content_disposition()
        file_name = decode_words(_safe_filename(part))
        content_id = _from_8bit(str(part.get("Content-ID", ""))).strip().strip("<>")
        is_body = disposition != "attachment" and not file_name
        if is_body and content_type == "text/plain" and not self.text:
            self.text = _decoded_text(part)
        elif is_body and content_type == "text/html" and not self.html:
            self.html = _decoded_text(part)
        elif (
            disposition == "attachment"
            or content_type == "message/rfc822"
            or (file_name and not content_id)
        ):
            self.attachments.append(
                MimePart(part_id or "1", content_type, file_name, content_id, part)
            )
        elif file_name or content_id:
            self.inline.append(MimePart(part_id or "1", content_type, file_name, content_id, part))


def _safe_filename(part: Message) -> str:
    try:
        return _from_8bit(part.get_filename() or "")
    except (LookupError, UnicodeError, ValueError):
        return ""


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    # Unlabelled text is decoded as UTF-8: ASCII is a subset, and 8-bit senders mostly mean it.
    charset = part.get_content_charset() or "utf-8"
    try:
        decoded = payload.decode(charset, errors="replace")
    except LookupError:
        decoded = payload.decode("utf-8", errors="replace")
    return _lf_line_ends(decoded)


def _lf_line_ends(text: str) -> str:
    return _in_passes(lambda part: part.replace("\r\n", "\n"), text, cut_after="\n")


def _from_8bit(value: str) -> str:
    """Header bytes arrive as ASCII with surrogate escapes; SMTPUTF8 senders mean UTF-8."""
    try:
        return value.encode("ascii", errors="surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        return value


def _header_value(raw_value: str) -> str:
    if raw_value.isascii() and "\n" not in raw_value:
        return raw_value.strip()  # what the two steps below give it, at a tenth of the cost
    return _unfold(_from_8bit(raw_value))


def _unfold(value: str) -> str:
    return _FOLD.sub("", value).strip()


def _addresses(value: str) -> tuple[Address, ...]:
    if not value.strip():
        return ()
    # Fast paths for the two common single-address forms; getaddresses is the slow general case.
    if bare := _BARE_ADDRESS.fullmatch(value):
        return (Address("", bare[0]),)
    if named := _NAMED_ADDRESS.fullmatch(value):
        return (Address(decode_words(named["name"]), named["address"]),)
    try:
        pairs = getaddresses([value])
    except (ValueError, IndexError):
        return ()
    # Like Go's net/mail, which Mailpit uses, an address needs a domain.
    return tuple(Address(decode_words(name), address) for name, address in pairs if "@" in address)


def _sender(value: str) -> Address | None:
    found = _addresses(value)
    if found:
        return found[0]
    # Mailpit keeps an unparsable From header as the name of an empty address.
    return Address(decode_words(value), "") if value.strip() else None


def _date(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
