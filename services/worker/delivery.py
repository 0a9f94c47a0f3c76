"""Pure decisions of delivery: the MIME message for a record, whether an SMTP failure is worth
retrying (or says the worker's own SMTP settings are refused), and how long to wait before the
next attempt. No I/O here."""

from __future__ import annotations

import email.policy
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Final, Literal, get_args

from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
)

from shared.schema import EmailRecord, mailbox


def message_id_header(message_id: str, domain: str) -> str:
    """The Message-ID header: the same for every attempt, so receivers can spot a repeat."""
    return f"<{message_id}@{domain}>"


def accepted_at(record: EmailRecord) -> datetime:
    """When the API accepted the email, in UTC; a created_at without a zone (not the API's
    doing, another producer's) is read as UTC too."""
    created_at = record.created_at
    if created_at.tzinfo is None:
        return created_at.replace(tzinfo=UTC)
    return created_at.astimezone(UTC)


def accepted_at_header(record: EmailRecord) -> str:
    """X-Accepted-At, to the microsecond (Date has whole seconds), so that the receiver can
    measure the whole trip: `2026-11-25T23:10:41.123456+00:00`."""
    return accepted_at(record).isoformat(timespec="microseconds")


def addresses(values: list[str]) -> list[str]:
    """The bare addresses of `Ana <ana@пример.рф>`-style values for the SMTP envelope, their
    domains as A-labels: `ana@xn--e1afmkfd.xn--p1ai`."""
    return [mailbox(value).outgoing_addr_spec for value in values]


def header_addresses(values: list[str]) -> list[Address]:
    """The addresses for a header, as the schema reads them, their domains as A-labels."""
    header_values = []
    for value in values:
        address = mailbox(value)
        username, _, domain = address.outgoing_addr_spec.rpartition("@")
        header_values.append(Address(address.display_name, username, domain))
    return header_values


def build_message(record: EmailRecord, message_id_domain: str) -> EmailMessage:
    """The MIME message for a record. Bcc recipients are in the envelope only, never a header."""
    # Non-ASCII display names and subjects are encoded (RFC 2047) and travel anywhere, as do
    # domains as A-labels; only a non-ASCII local part needs raw UTF-8 headers, which the
    # SMTPUTF8 extension carries.
    utf8_mailbox = any(
        mailbox(value).needs_smtputf8
        for value in [record.sender, *record.recipients, *record.reply_to]
    )
    message = EmailMessage(policy=email.policy.SMTPUTF8 if utf8_mailbox else email.policy.SMTP)
    message["Message-ID"] = message_id_header(record.message_id, message_id_domain)
    message["Date"] = format_datetime(record.created_at)
    message["X-Accepted-At"] = accepted_at_header(record)
    message["From"] = header_addresses([record.sender])
    if record.to:
        message["To"] = header_addresses(record.to)
    if record.cc:
        message["Cc"] = header_addresses(record.cc)
    if record.reply_to:
        message["Reply-To"] = header_addresses(record.reply_to)
    message["Subject"] = record.subject
    if record.tags:
        message["X-Tags"] = ", ".join(record.tags)  # the header Mailpit reads tags from
    for name, value in record.headers.items():
        message[name] = value
    if record.text is not None:
        message.set_content(record.text)
        if record.html is not None:
            message.add_alternative(record.html, subtype="html")
    elif record.html is not None:
        message.set_content(record.html, subtype="html")
    return message


# What the SMTP server refuses of the worker's own settings (credentials, TLS), for the metric
# email_worker_configuration_faults_total{kind} and the log.
ConfigurationFaultKind = Literal[
    "authentication", "authentication_required", "tls", "starttls_not_offered",
    "auth_not_offered", "session_refused",
]  # fmt: skip
CONFIGURATION_FAULT_KINDS: Final[tuple[ConfigurationFaultKind, ...]] = get_args(
    ConfigurationFaultKind
)
# RFC 4954: 530 authentication required, 534 mechanism too weak, 535 credentials invalid,
# 538 encryption required for the mechanism. Answers about the worker's settings, whichever
# email is in the transaction.
AUTHENTICATION_CODES: Final = frozenset({530, 534, 535, 538})


class ConfigurationFault(Exception):
    """The SMTP server refuses the worker's configuration (credentials, TLS), not an email: no
    email can pass until the settings or the server change. The message names the settings to
    check and never holds a secret."""

    def __init__(self, kind: ConfigurationFaultKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class OutcomeUnknown(Exception):
    """The connection was lost, or the reply did not come in time, after the final "." of
    DATA: the server may have stored the email or not, and nothing can tell which."""


@dataclass(frozen=True)
class Failure:
    permanent: bool  # True: retrying cannot help (5xx, a malformed message); dead-letter it
    reason: str
    # Set when the server refuses the worker's settings, not this email: hold it (and every
    # other) until the server accepts, whatever WORKER_MAX_ATTEMPTS says.
    fault: ConfigurationFaultKind | None = None
    outcome_unknown: bool = False  # the server may have the email already (OutcomeUnknown)


def authentication_refusal(error: BaseException) -> str | None:
    """The server's answer (`530 5.7.0 Authentication required`) when it refused a transaction
    for want of authentication or TLS (every recipient, if at RCPT); None otherwise."""
    if isinstance(error, SMTPResponseException) and error.code in AUTHENTICATION_CODES:
        return f"{error.code} {error.message}"
    if isinstance(error, SMTPRecipientsRefused) and all(
        refused.code in AUTHENTICATION_CODES for refused in error.recipients
    ):
        return "; ".join(f"{refused.code} {refused.message}" for refused in error.recipients)
    return None


def classify(error: BaseException) -> Failure:
    """Transient (retry with back-off, hold the partition), permanent (dead-letter, move on) or
    configuration (hold every email until the server accepts the worker's settings)."""
    if isinstance(error, ConfigurationFault):
        return Failure(False, str(error), error.kind)
    if isinstance(error, OutcomeUnknown):
        return Failure(False, f"outcome unknown: {error}", outcome_unknown=True)
    if isinstance(error, SMTPAuthenticationError):
        # Wrong credentials are the configuration's fault, not the email's; a 454 is a pause.
        return Failure(
            False,
            f"SMTP authentication refused ({error.code} {error.message}); "
            "check SMTP_USERNAME/SMTP_PASSWORD",
            "authentication" if error.code >= 500 else None,
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        # Before ValueError below, which it is too.
        return Failure(
            False, f"the TLS certificate is not trusted ({error}); check SMTP_CA_FILE", "tls"
        )
    if (answer := authentication_refusal(error)) is not None:
        return Failure(
            False,
            f"the SMTP server wants authentication or TLS ({answer}); "
            "check SMTP_TLS, SMTP_USERNAME and SMTP_PASSWORD",
            "authentication_required",
        )
    if isinstance(error, SMTPRecipientsRefused):
        # The replies without the addresses: this text is logged, and Bcc addresses never are
        # (the dead letter holds the record, and so every recipient).
        replies = Counter(f"{refused.code} {refused.message}" for refused in error.recipients)
        every_refusal_permanent = all(refused.code >= 500 for refused in error.recipients)
        return Failure(
            every_refusal_permanent,
            "every recipient was refused: "
            + "; ".join(reply if n == 1 else f"{reply} (x{n})" for reply, n in replies.items()),
        )
    if isinstance(error, SMTPResponseException):
        return Failure(error.code >= 500, f"the server answered {error.code} {error.message}")
    if isinstance(error, SMTPNotSupported | ValueError):
        return Failure(True, f"the server cannot take this email: {error}")
    # Connection refused or lost, timeouts, and anything unforeseen: the email may be fine.
    return Failure(False, f"{type(error).__name__}: {error}")


def backoff_seconds(
    attempt: int, initial: float, maximum: float, random: Callable[[], float]
) -> float:
    """Exponential back-off with jitter: about initial * 2**(attempt - 1), capped at maximum.

    Half of the delay is random, so that workers retrying the same server spread out.
    """
    delay = min(maximum, initial * 2.0 ** (attempt - 1))
    return delay / 2 + random() * delay / 2
