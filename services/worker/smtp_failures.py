"""What a failed SMTP attempt means: transient (retry it), permanent (dead-letter the email), a
refusal of the worker's own settings (hold every email), or an unknown outcome; and what a reply
asks of the worker: to slow down, or never to send to an address again. No I/O here."""

from __future__ import annotations

import re
import ssl
from collections import Counter
from dataclasses import dataclass
from typing import Final, Literal, get_args

from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponse,
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


class RelayUnavailable(Exception):
    """The relay could not be reached, or failed before it answered MAIL FROM (refused, lost or
    timed-out connections, a 4xx greeting, a stale pooled connection): no email has been named
    to it yet, so none is at fault. Every email waits for the relay, none is deferred."""


class OutcomeUnknown(Exception):
    """The connection was lost, or the reply did not come in time, after the final "." of
    DATA: the server may have stored the email or not, and nothing can tell which."""


@dataclass(frozen=True)
class Failure:
    permanent: bool  # True: retrying cannot help (5xx, a malformed message); dead-letter it
    reason: str
    # Set when the server refuses the worker's settings, not this email: hold it (and every
    # other) until the server accepts.
    fault: ConfigurationFaultKind | None = None
    outcome_unknown: bool = False  # the server may have the email already (OutcomeUnknown)
    relay_unavailable: bool = False  # RelayUnavailable: the relay's trouble, not the email's


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
    if isinstance(error, RelayUnavailable):
        return Failure(False, f"the relay is unavailable: {error}", relay_unavailable=True)
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


# RFC 3463's enhanced status code, class.subject.detail: where a reply's text starts ("5.1.1
# ..."; "#5.1.1 ..." in qmail's and Yahoo's), or in qmail's closing "(#5.7.1)".
ENHANCED_STATUS = re.compile(r"(?:^#?|\(#)([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# What relays say when they want fewer transactions, not another email: Amazon SES, Exchange
# Online, Yahoo, Gmail, Postfix's anvil (smtpd_client_*_rate_limit) and its policy daemons.
THROTTLING_TEXT = re.compile(
    r"\brate\b|ratelimit|throttl"
    r"|too many (?:connections|messages|emails|mails|sessions|requests|recipients from)"
    r"|too much mail|limit exceeded|exceeded .*limit|server busy|slow down|unexpected volume"
    r"|temporarily deferred due to",
    re.IGNORECASE,
)
# Greylisting asks for a later try of this sender and recipient, never a slower pace: postgrey,
# milter-greylist, rspamd, and the sink's "Greylisted: try again in N seconds".
GREYLISTING_TEXT = re.compile(r"gr[ae]y-?list|try again in \d+ seconds", re.IGNORECASE)
# A 421 that closes a session left idle too long asks nothing of the pace: Postfix's "421 4.4.2
# mx.example.com Error: timeout exceeded", Exim's "SMTP command timeout - closing connection".
IDLE_TIMEOUT_TEXT = re.compile(r"time ?out|timed out|\bidle\b", re.IGNORECASE)
THROTTLING_CODES: Final = frozenset({450, 451, 452, 454})
# Enhanced status subjects about one address or mailbox (X.1, X.2), the protocol (X.5: "too
# many recipients" in one transaction) or the content (X.6): a slower pace would not help.
NOT_ABOUT_THE_PACE: Final = frozenset({1, 2, 5, 6})
# A permanent refusal of the address itself: RFC 3463's X.1 (address status) but for X.1.7
# and X.1.8 (the sender's address, which Postfix may refuse at RCPT), and X.2.1 (mailbox
# disabled). Not X.7 (a policy or reputation refusal: the next email may well pass).
SENDER_ADDRESS_DETAILS: Final = frozenset({7, 8})
BARE_ADDRESS_REFUSALS: Final = frozenset({550, 551, 553})
# Without an enhanced status, the text tells a refusal of the sender or the relay's policy
# from one of the address: a relay that refuses to relay would otherwise suppress everyone.
NOT_THE_ADDRESS_TEXT = re.compile(
    r"sender|relay|spam|block|black ?list|policy|reputation|authenticat", re.IGNORECASE
)


def enhanced_status(reply: SMTPResponse) -> tuple[int, int, int] | None:
    """The enhanced status code (RFC 3463) of a reply: (5, 1, 1) for "550 5.1.1 ..."; None
    when it has none."""
    found = ENHANCED_STATUS.search(reply.message)
    return None if found is None else (int(found[1]), int(found[2]), int(found[3]))


def is_throttling(reply: SMTPResponse) -> bool:
    """Whether the relay asks the worker to slow down: a 421 (the relay closes the connection)
    unless it closes an idle one, and a 450, 451, 452 or 454 whose text speaks of rates, limits
    or load; never greylisting, nor a reply about one address, the mailbox, the protocol or the
    content. Such a reply is about the pace, not the email: it slows every lane, and the email
    waits."""
    if GREYLISTING_TEXT.search(reply.message):
        return False
    if reply.code == 421:
        return not closes_an_idle_connection(reply)
    if reply.code not in THROTTLING_CODES:
        return False
    status = enhanced_status(reply)
    if status is not None and status[1] in NOT_ABOUT_THE_PACE:
        return False
    return THROTTLING_TEXT.search(reply.message) is not None


def closes_an_idle_connection(reply: SMTPResponse) -> bool:
    """Whether a 421 ends a session the worker kept open too long without a command: it asks
    nothing of the pace, and says nothing of the email whose command it answered."""
    return (
        reply.code == 421
        and IDLE_TIMEOUT_TEXT.search(reply.message) is not None
        and THROTTLING_TEXT.search(reply.message) is None
        and GREYLISTING_TEXT.search(reply.message) is None
    )


def suppresses(rcpt_reply: SMTPResponse) -> bool:
    """Whether a reply to RCPT TO refuses the address for good, so that no later email should
    be sent to it: a 5xx with enhanced status 5.1.x (no such mailbox, domain or address) or
    5.2.1 (mailbox disabled), or a bare 550, 551 or 553 that names neither the sender nor a
    policy. Only for replies to RCPT: a 5xx to the final "." refuses the message, not the
    address."""
    if not 500 <= rcpt_reply.code < 600:
        return False
    status = enhanced_status(rcpt_reply)
    if status is None:
        return rcpt_reply.code in BARE_ADDRESS_REFUSALS and not NOT_THE_ADDRESS_TEXT.search(
            rcpt_reply.message
        )
    kind, subject, detail = status
    if kind != 5:
        return False  # a status that contradicts its code says nothing for sure
    if subject == 1:
        return detail not in SENDER_ADDRESS_DETAILS
    return (subject, detail) == (2, 1)


def throttling_reply(error: Exception) -> str | None:
    """`421 4.7.0 ...` when the whole transaction was refused with a reply that asks the worker
    to slow down (is_throttling), before MAIL FROM (a 421 greeting) or after it; None otherwise."""
    replies: list[SMTPResponse] = []
    if isinstance(error, RelayUnavailable) and error.__cause__ is not None:
        return throttling_reply(error.__cause__) if isinstance(error.__cause__, Exception) else None
    if isinstance(error, SMTPRecipientsRefused):
        replies = [SMTPResponse(refusal.code, refusal.message) for refusal in error.recipients]
    elif isinstance(error, SMTPResponseException):
        replies = [SMTPResponse(error.code, error.message)]
    if replies and all(is_throttling(reply) for reply in replies):
        return f"{replies[0].code} {replies[0].message}"
    return None
