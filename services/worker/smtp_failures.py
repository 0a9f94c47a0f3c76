"""What a failed SMTP attempt means: transient (retry it), permanent (dead-letter the email), a
refusal of the worker's own settings (hold every email), or an unknown outcome. No I/O here."""

from __future__ import annotations

import ssl
from collections import Counter
from dataclasses import dataclass
from typing import Final, Literal, get_args

from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
)

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
