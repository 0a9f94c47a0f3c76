"""Pure delivery decisions: the MIME message, transient, permanent or a configuration fault, and
the back-off."""

from __future__ import annotations

import email
import email.policy
import ssl
from datetime import UTC, datetime

import pytest
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPDataError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from services.worker.delivery import (
    ConfigurationFault,
    addresses,
    backoff_seconds,
    build_message,
    classify,
)
from shared.schema import EmailRecord


def record(**fields: object) -> EmailRecord:
    values: dict[str, object] = {
        "message_id": "m-1",
        "created_at": datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        "from": "Kafka Demo <demo@example.com>",
        "to": ["Ana <ana@example.com>"],
        "subject": "hello1",
        "text": "Hello, Ana",
    }
    return EmailRecord.model_validate({**values, **fields})


def parsed(message_bytes: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(message_bytes, policy=email.policy.default)


def test_message_id_is_deterministic_from_the_message_id() -> None:
    first = build_message(record(), "pipeline.test")
    again = build_message(record(), "pipeline.test")

    assert first["Message-ID"] == again["Message-ID"] == "<m-1@pipeline.test>"


def test_headers_come_from_the_record_and_bcc_stays_out() -> None:
    message = build_message(
        record(
            cc=["ops@example.com"],
            bcc=["secret@example.com"],
            reply_to=["help@example.com"],
            headers={"X-Campaign": "seed"},
            tags=["demo", "seed"],
        ),
        "pipeline.test",
    )
    read_back = parsed(message.as_bytes())

    assert read_back["From"] == "Kafka Demo <demo@example.com>"
    assert read_back["To"] == "Ana <ana@example.com>"
    assert read_back["Cc"] == "ops@example.com"
    assert read_back["Reply-To"] == "help@example.com"
    assert read_back["Subject"] == "hello1"
    assert read_back["X-Campaign"] == "seed"
    assert read_back["X-Tags"] == "demo, seed"
    assert read_back["Date"] == "Wed, 25 Nov 2026 09:30:00 +0000"
    assert read_back["X-Accepted-At"] == "2026-11-25T09:30:00.000000+00:00"
    assert "Bcc" not in read_back
    assert b"secret@example.com" not in message.as_bytes()


def test_text_and_html_make_an_alternative() -> None:
    message = build_message(record(html="<p>Hello, Ana</p>"), "pipeline.test")

    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_html_alone_is_sent_as_html() -> None:
    assert build_message(record(text=None, html="<p>hi</p>"), "d").get_content_type() == "text/html"


def test_non_ascii_subject_and_names_are_encoded() -> None:
    message = build_message(record(subject="Grüße ✉", to=["Zoë <zoe@example.com>"]), "d")
    read_back = parsed(message.as_bytes())

    assert read_back["Subject"] == "Grüße ✉"
    assert read_back["To"].addresses[0].display_name == "Zoë"


def test_envelope_addresses_are_bare() -> None:
    assert addresses(["Ana <ana@example.com>", "bob@example.com"]) == [
        "ana@example.com",
        "bob@example.com",
    ]


def certificate_not_trusted() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    return error


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (SMTPRecipientsRefused([SMTPRecipientRefused(550, "no such user", "a@example.com")]), True),
        (SMTPRecipientsRefused([SMTPRecipientRefused(451, "try later", "a@example.com")]), False),
        (
            SMTPRecipientsRefused(
                [
                    SMTPRecipientRefused(550, "no such user", "a@example.com"),
                    SMTPRecipientRefused(451, "try later", "b@example.com"),
                ]
            ),
            False,
        ),
        (SMTPDataError(554, "rejected"), True),
        (SMTPDataError(452, "out of storage"), False),
        (SMTPSenderRefused(553, "bad sender", "demo@example.com"), True),
        (SMTPAuthenticationError(454, "temporary authentication failure"), False),
        (SMTPServerDisconnected("lost"), False),
        (SMTPConnectError("refused"), False),
        (ConnectionRefusedError(111, "refused"), False),
        (TimeoutError(), False),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), False),
        (ValueError("address contains a newline"), True),
    ],
)
def test_failures_are_transient_or_permanent(error: BaseException, permanent: bool) -> None:
    failure = classify(error)

    assert failure.permanent is permanent
    assert failure.fault is None


@pytest.mark.parametrize(
    ("error", "fault", "settings"),
    [
        pytest.param(
            ConfigurationFault("tls", "the TLS certificate of smtp.example.com:587 is not trusted"),
            "tls",
            [],
            id="raised_by_the_smtp_edge",
        ),
        pytest.param(
            SMTPAuthenticationError(535, "5.7.8 Authentication credentials invalid"),
            "authentication",
            ["SMTP_USERNAME/SMTP_PASSWORD"],
            id="535_at_auth",
        ),
        pytest.param(
            SMTPSenderRefused(530, "5.7.0 Authentication required", "demo@example.com"),
            "authentication_required",
            ["SMTP_TLS", "SMTP_USERNAME", "SMTP_PASSWORD"],
            id="530_at_mail",
        ),
        pytest.param(
            SMTPSenderRefused(530, "5.7.0 Must issue a STARTTLS command first", "d@example.com"),
            "authentication_required",
            ["SMTP_TLS"],
            id="530_starttls_first",
        ),
        pytest.param(
            SMTPRecipientsRefused(
                [SMTPRecipientRefused(530, "5.7.57 Client was not authenticated", "a@example.com")]
            ),
            "authentication_required",
            ["SMTP_USERNAME"],
            id="530_at_rcpt",
        ),
        pytest.param(
            SMTPDataError(538, "5.7.11 Encryption required for requested authentication mechanism"),
            "authentication_required",
            ["SMTP_TLS"],
            id="538",
        ),
        pytest.param(certificate_not_trusted(), "tls", ["SMTP_CA_FILE"], id="certificate"),
    ],
)
def test_refusals_of_the_workers_settings_are_configuration_faults_not_the_emails(
    error: BaseException, fault: str, settings: list[str]
) -> None:
    failure = classify(error)

    assert failure.fault == fault
    assert not failure.permanent, "a configuration fault must never dead-letter the email"
    for setting in settings:
        assert setting in failure.reason


def test_backoff_doubles_up_to_the_maximum_with_jitter() -> None:
    without_jitter = [backoff_seconds(n, 0.5, 4.0, lambda: 1.0) for n in range(1, 7)]
    least = [backoff_seconds(n, 0.5, 4.0, lambda: 0.0) for n in range(1, 7)]

    assert without_jitter == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert least == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_a_non_ascii_mailbox_uses_utf8_headers() -> None:
    message = build_message(record(to=["josé@example.com"]), "d")

    assert message.policy is email.policy.SMTPUTF8
    assert "josé@example.com".encode() in message.as_bytes()
