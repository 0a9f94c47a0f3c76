"""The fast MIME renderer: the same message as the reference (tests/reference_mime.py's
build_message), as 7-bit clean SMTP DATA bytes."""

from __future__ import annotations

import email
import email.policy
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses

import pytest

from services.worker.mime import render_email, unstructured_field
from shared.schema import EmailRecord
from tests.reference_mime import build_message
from tests.unit.worker.fakes import email_record
from tests.unit.worker.largest_email import largest_email

DOMAIN = "pipeline.test"
CONTROL_CHARACTERS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
FIFTY_RECIPIENTS: dict[str, object] = {
    "to": [f"Person Number {n} <person{n}@example.com>" for n in range(20)],
    "cc": [f"copy{n}@example.com" for n in range(20)],
    "bcc": [f"Hidden {n} <hidden{n}@example.com>" for n in range(10)],
}

# Records the two renderers must agree on. Each names what it exercises.
RECORDS: dict[str, dict[str, object]] = {
    "plain_ascii": {
        "from": "Kafka Demo <demo@example.com>",
        "to": ["Ana <ana@example.com>"],
        "subject": "Your order has shipped",
        "text": "Hello Ana, your order has shipped.",
    },
    "non_ascii_display_names": {
        "from": "José Müller <jose@example.com>",
        "to": ["Zoë <zoe@example.com>", "李小龍 <lee@example.com>", "Ana María <ana@example.com>"],
    },
    "display_names_that_need_quotes": {
        "from": '"Smith, Bob" <bob@example.com>',
        "to": ['"Ana (Sales): EU" <ana@example.com>', '"Dr. O\'Neil" <oneil@example.com>'],
    },
    "non_ascii_subject": {"subject": "Grüße aus Köln — ☕ and more"},
    "subject_998_with_spaces": {"subject": ("lorem ipsum dolor " * 56)[:997] + "x"},
    "subject_998_without_spaces": {"subject": "x" * 998},
    "subject_998_non_ascii_without_spaces": {"subject": "é" * 998},
    "subject_with_specials": {"subject": 'Re: "Q3 report", part 2: a=b; (draft) <v2> \\ end'},
    "subject_with_tab_and_controls": {"subject": "tab\there bell\x07 del\x7f"},
    "empty_subject": {"subject": ""},
    "fifty_recipients": FIFTY_RECIPIENTS,
    "reply_to": {"reply_to": ["Help Desk <help@example.com>", "ops@example.com"]},
    "custom_headers": {
        "headers": {
            "X-Campaign": "spring-2026",
            "X-Note": "Grüße",
            "List-Unsubscribe": "<mailto:unsubscribe@example.com>",
            "X-Long": " ".join(f"word{n}" for n in range(120)),
            "X-Long-Non-Ascii": "ü" * 300,
        }
    },
    # build_message's set_content clears every Content-* header; render_email does the same.
    "custom_content_header": {"headers": {"Content-Language": "en", "X-Kept": "yes"}},
    "tags": {"tags": ["welcome", "spring-2026", "ünïcode"]},
    "text_only": {"text": "Just text.\n"},
    "html_only": {"text": None, "html": "<p>Just <b>HTML</b>.</p>"},
    "text_and_html": {"text": "Hello", "html": "<p>Hello</p>"},
    "non_ascii_bodies": {"text": "Grüße ☕\n", "html": "<p>Grüße ☕</p>"},
    "long_lines": {"text": "a" * 2000, "html": "<p>" + "b " * 800 + "</p>"},
    "ascii_lines_between_78_and_998": {"text": "c" * 500 + "\n" + "d" * 998},
    "line_endings": {"text": "one\ntwo\r\nthree\rfour\n\rfive\r\n\r\n", "html": "<p>\r</p>\n"},
    "control_characters": {
        "text": "nul\x00 bell\x07 del\x7f ff\x0c vt\x0b fs\x1c nel\x85 ls\u2028."
    },
    "dot_lines": {"text": ".\n..\n.leading dot\nend.\n.", "html": ".<p>\n.</p>"},
    "trailing_whitespace": {"text": "space \ntab\t\n \n"},
    "empty_text": {"text": ""},
    "empty_text_and_html": {"text": "", "html": ""},
    "everything": {
        "from": "Zoë Sender <sender@example.com>",
        **FIFTY_RECIPIENTS,
        "reply_to": ["Réponse <reply@example.com>"],
        "subject": 'Tout ça: « résumé », 100% "prêt"',
        "headers": {"X-Campaign": "été", "X-Plain": "plain"},
        "tags": ["a", "b"],
        "text": "Bonjour,\r\n\r\nÇa va ?\n" + "long " * 300,
        "html": "<p>Bonjour</p>\n" * 50,
    },
}


def record_named(name: str) -> EmailRecord:
    return email_record(f"m-{name}", **RECORDS[name])


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def reference_bytes(record: EmailRecord) -> bytes:
    return build_message(record, DOMAIN).as_bytes(policy=email.policy.SMTP)


def header_values(message: EmailMessage) -> dict[str, list[str]]:
    """Each header's decoded values by lowercase name, but how the body is encoded.

    The transfer encodings differ by design (render_email picks 7bit or quoted-printable to
    stay 7-bit clean; the reference picks 7bit, 8bit, quoted-printable or base64), and so do
    the multipart boundaries: the decoded contents are compared instead.
    """
    values = {name.lower(): [str(value) for value in message.get_all(name, [])] for name in message}
    values.pop("content-transfer-encoding", None)  # multipart messages have none
    content_params = {
        name: value for name, value in message["Content-Type"].params.items() if name != "boundary"
    }
    values["content-type"] = [f"{message.get_content_type()} {sorted(content_params.items())}"]
    return values


def decoded_parts(message: EmailMessage) -> list[tuple[str, str | None, str]]:
    """(content type, charset, decoded content) of each leaf part, in order.

    Compared exactly, line endings included: both renderers turn \\r\\n, \\r and \\n into
    CRLF and end an unterminated last line (an empty body becomes one empty line), so no
    normalisation is needed (test_line_endings_become_crlf_and_the_last_line_is_ended).
    """
    return [
        (part.get_content_type(), part.get_content_charset(), part.get_content())
        for part in message.walk()
        if not part.is_multipart()
    ]


def lines_of(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def raw_field(data: bytes, name: bytes) -> list[bytes]:
    """The lines of one header field as written, folds and all."""
    lines = lines_of(header_block(data))
    start = next(i for i, line in enumerate(lines) if line.lower().startswith(name.lower() + b":"))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith((b" ", b"\t"))),
        len(lines),
    )
    return lines[start:end]


@pytest.mark.parametrize("name", RECORDS)
def test_renders_the_same_message_as_build_message(name: str) -> None:
    record = record_named(name)
    ours = parsed(render_email(record, DOMAIN).data)
    reference = parsed(reference_bytes(record))

    assert header_values(ours) == header_values(reference)
    assert decoded_parts(ours) == decoded_parts(reference)


@pytest.mark.parametrize("name", RECORDS)
def test_the_fast_path_is_7bit_crlf_and_within_998_octets(name: str) -> None:
    outgoing = render_email(record_named(name), DOMAIN)

    assert outgoing.smtputf8 is False
    assert outgoing.data.isascii()
    assert b"\r" not in outgoing.data.replace(b"\r\n", b"")
    assert b"\n" not in outgoing.data.replace(b"\r\n", b"")
    # Control characters are legal only as obsolete syntax: headers and bodies encode them.
    assert CONTROL_CHARACTERS.search(outgoing.data) is None
    assert outgoing.data.endswith(b"\r\n")
    assert max(len(line) for line in lines_of(outgoing.data)) <= 998


def test_headers_come_in_build_messages_order_and_bcc_stays_out() -> None:
    record = email_record(
        "m-1",
        cc=["cc@example.com"],
        bcc=["Secret <secret@example.com>"],
        reply_to=["reply@example.com"],
        headers={"X-Campaign": "seed"},
        tags=["demo"],
    )
    data = render_email(record, DOMAIN).data
    names = [line.split(b":", 1)[0] for line in lines_of(header_block(data)) if line[:1] != b" "]

    assert names == [
        b"Message-ID",
        b"Date",
        b"X-Accepted-At",
        b"From",
        b"To",
        b"Cc",
        b"Reply-To",
        b"Subject",
        b"X-Tags",
        b"X-Campaign",
        b"MIME-Version",
        b"Content-Type",
        b"Content-Transfer-Encoding",
    ]
    assert b"secret" not in data.lower()


@pytest.mark.parametrize(
    "mailboxes",
    [{}, {"to": ["Zoë <zoë@example.com>"]}],
    ids=["fast_path", "smtputf8_fallback"],
)
def test_x_accepted_at_follows_date_and_reads_back_as_created_at_to_the_microsecond(
    mailboxes: dict[str, object],
) -> None:
    """Date has whole seconds; X-Accepted-At lets the receiver measure the whole trip."""
    created_at = datetime(2026, 11, 26, 0, 10, 41, 123456, tzinfo=timezone(timedelta(hours=1)))
    outgoing = render_email(email_record("m-1", created_at=created_at, **mailboxes), DOMAIN)
    names = [line.split(b":", 1)[0] for line in lines_of(header_block(outgoing.data))]
    value = parsed(outgoing.data)["X-Accepted-At"]

    assert names[names.index(b"Date") + 1] == b"X-Accepted-At"
    assert value == "2026-11-25T23:10:41.123456+00:00"
    assert datetime.fromisoformat(value) == created_at


def test_x_accepted_at_keeps_zero_microseconds_and_reads_a_naive_time_as_utc() -> None:
    naive = datetime(2026, 11, 25, 9, 30)
    outgoing = render_email(email_record("m-1", created_at=naive), DOMAIN)

    assert parsed(outgoing.data)["X-Accepted-At"] == "2026-11-25T09:30:00.000000+00:00"
    assert datetime.fromisoformat(parsed(outgoing.data)["X-Accepted-At"]).tzinfo == UTC


def test_the_envelope_has_bare_addresses_and_bcc_only_there() -> None:
    record = email_record(
        "m-1",
        **{
            "from": "Kafka Demo <demo@example.com>",
            "to": ["Ana <ana@example.com>", "bob@example.com"],
            "cc": ["Zoë <zoe@example.com>"],
            "bcc": ["Hidden <hidden@example.com>"],
            "reply_to": ["Reply <reply@example.com>"],
        },
    )
    outgoing = render_email(record, DOMAIN)

    assert outgoing.message_id == "<m-1@pipeline.test>"
    assert outgoing.sender == "demo@example.com"
    assert outgoing.recipients == [
        "ana@example.com",
        "bob@example.com",
        "zoe@example.com",
        "hidden@example.com",
    ]
    assert "Bcc" not in parsed(outgoing.data)
    assert b"hidden" not in outgoing.data.lower()
    assert parsed(outgoing.data)["Message-ID"] == "<m-1@pipeline.test>"


def test_addresses_fold_after_a_comma_within_78_characters() -> None:
    data = render_email(email_record("m-1", **FIFTY_RECIPIENTS), DOMAIN).data

    for name in (b"To", b"Cc"):
        lines = raw_field(data, name)
        assert len(lines) > 1
        assert all(len(line) <= 78 for line in lines)
        assert all(line.endswith(b",") for line in lines[:-1])


def test_an_address_longer_than_a_line_stays_whole_on_its_own_line() -> None:
    long_name = " ".join(["Someone"] * 15)  # 119 characters: quoted, it cannot fold
    record = email_record("m-1", to=["ana@example.com", f"{long_name} <long@example.com>"])
    lines = raw_field(render_email(record, DOMAIN).data, b"To")

    assert lines == [b"To: ana@example.com,", f" {long_name} <long@example.com>".encode()]


@pytest.mark.parametrize(
    "display_name",
    ["A" * 128, "é" * 128, "😀" * 128, ("Long Name, " * 12)[:128]],
    ids=["ascii_without_spaces", "non_ascii", "four_octet_characters", "ascii_with_specials"],
)
def test_the_longest_display_name_stays_one_word_on_one_line_within_998_octets(
    display_name: str,
) -> None:
    """One encoded word, however long: readers join several differently (Python's adds a space
    between them). The schema bounds the name so that it fits with the longest address."""
    addr_spec = "l" * 64 + "@" + "d" * 63 + "." + "e" * 63 + "." + "f" * 57 + ".com"
    quoted = display_name.replace('"', '\\"')
    record = email_record("m-1", reply_to=[f'"{quoted}" <{addr_spec}>'])
    data = render_email(record, DOMAIN).data
    [line] = raw_field(data, b"Reply-To")
    [(name, address)] = getaddresses([line.decode("ascii").removeprefix("Reply-To: ")])

    assert len(addr_spec) == 254
    assert len(line) <= 998
    assert str(make_header(decode_header(name))) == display_name
    assert address == addr_spec


@pytest.mark.parametrize(
    "subject",
    ["=?utf-8?q?hello?=", "price =?EUR", "a=?b?c?=d"],
)
def test_a_subject_that_looks_like_an_encoded_word_arrives_as_written(subject: str) -> None:
    """Deliberate difference: build_message writes it as is, and readers decode it (the
    reference's own round trip turns "=?utf-8?q?hello?=" into "hello")."""
    data = render_email(email_record("m-1", subject=subject), DOMAIN).data

    assert parsed(data)["Subject"] == subject


def test_a_long_custom_header_name_adds_no_space_to_its_value() -> None:
    """Deliberate difference: for a name this long, the reference's value gains a leading
    space (the first line has no room, and the fold before the value is read as part of it)."""
    values = {"X-" + "n" * 74: "é" * 20, "X-" + "m" * 74: "ab " * 40, "X-" + "o" * 74: "a" * 300}
    data = render_email(email_record("m-1", headers=values), DOMAIN).data
    message = parsed(data)

    assert {name: message[name] for name in values} == values
    assert max(len(line) for line in lines_of(data)) <= 998


def test_an_old_style_comment_becomes_the_display_name() -> None:
    """`ana@example.com (Ana)` is read with getaddresses, as the schema and the envelope read
    it, so the comment is the name (as the reference now does too)."""
    record = email_record("m-1", to=["ana@example.com (Ana)"])

    assert parsed(render_email(record, DOMAIN).data)["To"] == "Ana <ana@example.com>"


def test_unstructured_values_round_trip_through_a_reader() -> None:
    """Plain, folded and encoded forms alike, for header names of any reasonable length.

    Leading white space is the one thing lost, as the reference loses it: a reader strips
    it after the colon.
    """
    fragments = ["a", "bb", "word", "x" * 90, " ", "  ", "\t", ",", ";", ":", '"', "(", "=", "?"]
    fragments += ["é", "☕", "=?", "?=", "\x01", "\x7f"]
    rng = random.Random(5322)
    for _ in range(500):
        name = "X-" + "h" * rng.choice([1, 8, 30, 60, 70, 90])
        value = "".join(rng.choices(fragments, k=rng.randint(0, 120))).lstrip(" \t")[:998]
        field = unstructured_field(name, value)
        message = parsed(f"{field}\r\n\r\n".encode("ascii"))

        assert message[name] == value, (name, value, field)
        assert max(len(line) for line in field.split("\r\n")) <= 998


@pytest.mark.parametrize(
    ("text", "content"),
    [
        ("one\ntwo\r\nthree\rfour", "one\r\ntwo\r\nthree\r\nfour\r\n"),
        ("ended\n", "ended\r\n"),
        ("blank lines\n\n\n", "blank lines\r\n\r\n\r\n"),
        ("", "\r\n"),
        ("Grüße\rü", "Grüße\r\nü\r\n"),
    ],
)
def test_line_endings_become_crlf_and_the_last_line_is_ended(text: str, content: str) -> None:
    """As build_message does (its content manager splits with bytes.splitlines and ends
    every line), so the parts' contents compare equal without normalising line endings."""
    message = parsed(render_email(email_record("m-1", text=text), DOMAIN).data)

    assert message.get_content() == content


@pytest.mark.parametrize(
    ("text", "transfer_encoding"),
    [
        ("hello", "7bit"),
        ("tab\tis fine", "7bit"),
        ("x" * 998, "7bit"),
        ("x" * 999, "quoted-printable"),
        ("Grüße", "quoted-printable"),
        ("nul\x00", "quoted-printable"),
        ("del\x7f", "quoted-printable"),
        ("form\x0cfeed", "quoted-printable"),
    ],
)
def test_plain_ascii_is_7bit_and_anything_else_quoted_printable(
    text: str, transfer_encoding: str
) -> None:
    message = parsed(render_email(email_record("m-1", text=text), DOMAIN).data)

    assert message["Content-Transfer-Encoding"] == transfer_encoding
    assert message.get_content() == text + "\r\n"


def test_the_boundary_is_the_same_on_every_attempt() -> None:
    record = email_record("m-1", html="<p>hello</p>")
    first, again = render_email(record, DOMAIN), render_email(record, DOMAIN)

    assert first.data == again.data
    assert parsed(first.data)["Content-Type"].params["boundary"] == "=_alt_m-1"


def test_a_part_holding_the_boundary_gets_a_random_one() -> None:
    text = "a line that happens to read\n--=_alt_m-1\nand more"
    record = email_record("m-1", text=text, html="<p>hello</p>")
    message = parsed(render_email(record, DOMAIN).data)

    assert message["Content-Type"].params["boundary"] != "=_alt_m-1"
    assert decoded_parts(message) == decoded_parts(parsed(reference_bytes(record)))


def test_a_long_message_id_still_gives_a_valid_boundary() -> None:
    record = email_record("m" * 200, html="<p>hello</p>")
    message = parsed(render_email(record, DOMAIN).data)

    assert len(message["Content-Type"].params["boundary"]) <= 70
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]


def test_a_non_ascii_mailbox_falls_back_to_smtputf8() -> None:
    record = email_record(
        "m-1",
        **{
            "from": "José <josé@example.com>",
            "to": ["Zoë <zoë@example.com>", "ana@example.com"],
            "bcc": ["hidden@example.com"],
            "subject": "Grüße",
            "html": "<p>Grüße</p>",
        },
    )
    outgoing = render_email(record, DOMAIN)
    reference = build_message(record, DOMAIN).as_bytes(policy=email.policy.SMTPUTF8)
    ours, theirs = parsed(outgoing.data), parsed(reference)

    assert outgoing.smtputf8 is True
    assert outgoing.sender == "josé@example.com"
    assert outgoing.recipients == ["zoë@example.com", "ana@example.com", "hidden@example.com"]
    assert "zoë@example.com".encode() in outgoing.data
    assert b"hidden" not in outgoing.data
    assert header_values(ours) == header_values(theirs)
    assert decoded_parts(ours) == decoded_parts(theirs)


def test_a_non_ascii_display_name_alone_keeps_the_fast_path() -> None:
    outgoing = render_email(email_record("m-1", to=["Zoë <zoe@example.com>"]), DOMAIN)

    assert outgoing.smtputf8 is False
    assert outgoing.data.isascii()


def test_an_idn_domain_goes_as_a_labels_in_the_envelope_and_the_headers() -> None:
    """A relay without SMTPUTF8 takes it: only a non-ASCII local part needs that extension."""
    record = email_record(
        "m-1",
        **{
            "from": "Пример <info@пример.рф>",
            "to": ["Zoë <zoe@bücher.de>", "ana@example.com"],
            "cc": ["ops@ПРИМЕР.РФ"],
            "bcc": ["hidden@faß.de"],
            "reply_to": ["help@例え.jp"],
        },
    )
    outgoing = render_email(record, DOMAIN)
    message = parsed(outgoing.data)

    assert outgoing.smtputf8 is False
    assert outgoing.data.isascii()
    assert outgoing.sender == "info@xn--e1afmkfd.xn--p1ai"
    assert outgoing.recipients == [
        "zoe@xn--bcher-kva.de",
        "ana@example.com",
        "ops@xn--e1afmkfd.xn--p1ai",
        "hidden@xn--fa-hia.de",  # IDNA 2008: ß is kept, not mapped to "ss"
    ]
    assert message["From"] == "Пример <info@xn--e1afmkfd.xn--p1ai>"
    assert message["To"] == "Zoë <zoe@xn--bcher-kva.de>, ana@example.com"
    assert message["Cc"] == "ops@xn--e1afmkfd.xn--p1ai"
    assert message["Reply-To"] == "help@xn--r8jz45g.jp"


def test_a_non_ascii_local_part_alone_needs_smtputf8_and_its_domain_still_goes_as_a_labels() -> (
    None
):
    record = email_record("m-1", to=["José <josé@пример.рф>", "ana@bücher.de"])
    outgoing = render_email(record, DOMAIN)
    header_section = outgoing.data.split(b"\r\n\r\n", 1)[0].decode("utf-8")

    assert outgoing.smtputf8 is True
    assert outgoing.recipients == ["josé@xn--e1afmkfd.xn--p1ai", "ana@xn--bcher-kva.de"]
    assert "<josé@xn--e1afmkfd.xn--p1ai>, ana@xn--bcher-kva.de" in header_section
    assert header_section.replace("josé", "").isascii(), "only the mailbox is raw UTF-8"


@pytest.mark.parametrize(
    "display_name", ["=?utf-8?q?hello?=", "a =?b?= c", "  two  spaces  ", "tab\there"]
)
def test_a_display_name_arrives_as_written(display_name: str) -> None:
    """Quoted where atoms cannot carry it; encoded when it holds "=?", which readers decode
    even between quotes."""
    quoted = display_name.replace('"', '\\"')
    record = email_record("m-1", to=[f'"{quoted}" <ana@example.com>'])
    [address] = parsed(render_email(record, DOMAIN).data)["To"].addresses

    assert (address.display_name, address.addr_spec) == (display_name, "ana@example.com")


@pytest.mark.parametrize("subject", ["  leading spaces", "\ttab first", " ", "trailing  "])
def test_white_space_around_a_subject_arrives_as_written(subject: str) -> None:
    """Readers strip white space after the colon: a value starting with some is encoded."""
    data = render_email(email_record("m-1", subject=subject), DOMAIN).data

    assert parsed(data)["Subject"] == subject


def test_the_largest_email_the_api_accepts_renders_correctly() -> None:
    """Every count at its bound, names and values filling the header fields' total, text and
    html filling API_MAX_BODY_BYTES (`python -m tests.unit.worker.largest_email` times it)."""
    record = largest_email()
    outgoing = render_email(record, DOMAIN)
    message = parsed(outgoing.data)
    header_section = header_block(outgoing.data)

    assert len(outgoing.recipients) == 100
    assert outgoing.smtputf8 is False
    assert max(len(line) for line in lines_of(outgoing.data)) <= 998
    assert len(header_section) <= 32 * 1024, "sendmail's MaxHeadersLength"
    for name, values in [("To", record.to), ("Cc", record.cc), ("Reply-To", record.reply_to)]:
        assert [
            (address.display_name, address.addr_spec) for address in message[name].addresses
        ] == [
            (display_name, addr_spec.replace("пример.рф", "xn--e1afmkfd.xn--p1ai"))
            for display_name, addr_spec in getaddresses(values)
        ]
    assert message["Subject"] == record.subject
    assert {name: message[name] for name in record.headers} == record.headers
    body = "".join(f"{line}\r\n" for line in f"{record.text}".split("\n"))
    assert record.text == record.html
    assert decoded_parts(message) == [("text/plain", "utf-8", body), ("text/html", "utf-8", body)]


def test_the_header_section_stays_within_32_kib_for_the_costliest_header_fields() -> None:
    """Short encoded words cost the most a character: every count at its bound, four-octet
    characters everywhere, and the schema's 16 KiB of header fields all but used."""
    emoji = "😀"
    addresses = [f'"{emoji}" <{n}@b.co>' for n in range(100)]
    record = email_record(
        "m" * 200,
        **{
            "from": addresses[0],
            "to": addresses[:50],
            "cc": addresses[50:],
            "reply_to": addresses[:10],
            "subject": emoji * 998,
            "headers": {f"X-{n:03}": emoji * 50 for n in range(50)},
            "tags": [emoji] * 20,
        },
    )
    header_section = header_block(render_email(record, DOMAIN).data)

    assert len(header_section) <= 32 * 1024, "sendmail's MaxHeadersLength"
