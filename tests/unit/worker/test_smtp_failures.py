"""What a failed SMTP attempt means: transient, permanent, or a refusal of the worker's own
settings (a configuration fault), never the email's; and which replies ask the worker to slow
down, or never to send to an address again, told apart on replies real servers send."""

from __future__ import annotations

import ssl

import pytest
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPDataError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from services.worker.smtp_failures import (
    ConfigurationFault,
    OutcomeUnknown,
    RelayUnavailable,
    classify,
    closes_an_idle_connection,
    enhanced_status,
    is_throttling,
    suppresses,
)


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


def test_a_relay_unavailable_is_the_relays_fault_neither_the_emails_nor_the_settings() -> None:
    error = RelayUnavailable("relay.test:25: ConnectionRefusedError: [Errno 111] refused")

    failure = classify(error)

    assert failure.relay_unavailable
    assert (failure.permanent, failure.fault, failure.outcome_unknown) == (False, None, False)
    assert failure.reason == f"the relay is unavailable: {error}"


@pytest.mark.parametrize(
    "error",
    [
        SMTPServerDisconnected("lost"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        OutcomeUnknown("no reply to the end of DATA"),
        SMTPRecipientsRefused([SMTPRecipientRefused(451, "try later", "a@example.com")]),
    ],
)
def test_only_a_relay_unavailable_says_the_relay_is(error: BaseException) -> None:
    """The SMTP edge raises RelayUnavailable before MAIL FROM is answered; the same failure
    after it is the email's (services/worker/smtp.py)."""
    assert not classify(error).relay_unavailable


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


def reply(line: str) -> SMTPResponse:
    """A reply as aiosmtplib gives it: the code, then the text of every line without it."""
    lines = line.split("\n")
    return SMTPResponse(int(lines[0][:3]), "\n".join(part[4:] for part in lines))


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("454 Throttling failure: Maximum sending rate exceeded.", id="ses_rate"),
        pytest.param("454 Throttling failure: Daily message quota exceeded.", id="ses_quota"),
        pytest.param(
            "421 4.3.2 The maximum number of concurrent server connections has exceeded a "
            "limit, closing transmission channel",
            id="exchange_online_connections",
        ),
        pytest.param(
            "451 4.7.500 Server busy. Please try again later from [203.0.113.5]. (S77719) "
            "[BN8NAM11FT066.eop-nam11.prod.protection.outlook.com]",
            id="exchange_online_server_busy",
        ),
        pytest.param(
            "421 4.7.650 The mail server [203.0.113.5] has been temporarily rate limited due "
            "to IP reputation. For e-mail delivery information, see https://aka.ms/postmaster",
            id="outlook_com_rate_limited",
        ),
        pytest.param(
            "421 4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred due to "
            "unexpected volume or user complaints - 4.16.55.1; see "
            "https://postmaster.yahooinc.com/error-codes",
            id="yahoo_tss04",
        ),
        pytest.param(
            "421-4.7.28 [203.0.113.5      15] Our system has detected an unusual rate of\n"
            "421-4.7.28 unsolicited mail originating from your IP address. To protect our\n"
            "421-4.7.28 users from spam, mail sent from your IP address has been temporarily\n"
            "421 4.7.28 rate limited.",
            id="gmail_unusual_rate",
        ),
        pytest.param("421 4.7.0 Try again later, closing connection. (EHLO)", id="gmail_421"),
        pytest.param("450 4.7.1 Error: too much mail from 203.0.113.5", id="postfix_anvil_mail"),
        pytest.param(
            "450 4.7.1 Error: too many recipients from 203.0.113.5", id="postfix_anvil_rcpt"
        ),
        pytest.param(
            "421 4.7.0 mx.example.com Error: too many connections from 203.0.113.5",
            id="postfix_anvil_connections",
        ),
        pytest.param(
            "450 4.7.1 <ana@example.com>: Recipient address rejected: Rate limit exceeded",
            id="postfix_policy_daemon",
        ),
        pytest.param("450 Sender rate overlimit - 120.5 / 1h / 100", id="exim_ratelimit_acl"),
        pytest.param("421 4.7.0 Too many concurrent SMTP connections", id="too_many_connections"),
        pytest.param("452 4.3.2 Too many messages in this session, slow down", id="slow_down_452"),
        pytest.param("421 4.3.2 Service not available, closing channel", id="any_421"),
        pytest.param(
            "421 4.7.0 Too many connections, try again after a timeout", id="a_limit_and_timeout"
        ),
    ],
)
def test_replies_that_ask_to_slow_down_are_throttling(line: str) -> None:
    assert is_throttling(reply(line))


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            "450 4.2.0 <ana@example.com>: Recipient address rejected: Greylisted, see "
            "http://postgrey.schweikert.ch/help/example.com.html",
            id="postgrey",
        ),
        pytest.param("451 4.7.1 Greylisted: try again in 38 seconds", id="the_sinks_greylist"),
        pytest.param(
            "451 4.7.1 Greylisting in action, please come back in 00:05:00",
            id="milter_greylist",
        ),
        pytest.param("421 4.7.0 Greylisted, please try again later", id="greylisting_in_a_421"),
        pytest.param("421 4.4.2 mx.example.com Error: timeout exceeded", id="postfix_idle"),
        pytest.param(
            "421 mx.example.com: SMTP command timeout - closing connection", id="exim_idle"
        ),
        pytest.param("421 4.4.2 Connection dropped due to idle timeout", id="idle_421"),
        pytest.param(
            "451 4.3.0 Injected transient failure for this recipient, try again later",
            id="the_sinks_transient_fault",
        ),
        pytest.param("451 4.3.0 Mail server temporarily rejected message.", id="gmail_451"),
        pytest.param(
            "450-4.2.1 The user you are trying to contact is receiving mail at a rate that\n"
            "450-4.2.1 prevents additional messages from being delivered. Please resend your\n"
            "450 4.2.1 message at a later time.",
            id="gmail_one_recipients_rate",  # the mailbox's pace, not the relay's: X.2
        ),
        pytest.param("452 4.5.3 Error: too many recipients", id="postfix_recipients_per_message"),
        pytest.param("452 4.5.3 Too many recipients, recipient limit exceeded", id="x5_limit"),
        pytest.param("452 4.3.1 Insufficient system storage", id="storage"),
        pytest.param(
            "452 4.2.2 The email account that you tried to reach is over quota.", id="over_quota"
        ),
        pytest.param("454 4.7.0 Temporary authentication failure", id="auth_454"),
        pytest.param("454 4.7.0 TLS not available due to local problem", id="tls_454"),
        pytest.param("550 5.7.1 Rate limit exceeded, message refused", id="a_5xx_is_no_pause"),
        pytest.param("554 Throttling failure: Maximum sending rate exceeded.", id="a_554"),
        pytest.param("250 2.0.0 Ok: queued as 4Zc1", id="a_250"),
    ],
)
def test_greylisting_and_other_refusals_are_not_throttling(line: str) -> None:
    assert not is_throttling(reply(line))


@pytest.mark.parametrize(
    ("line", "idle"),
    [
        pytest.param("421 4.4.2 mx.example.com Error: timeout exceeded", True, id="postfix"),
        pytest.param("421 mx.example.com: SMTP command timeout - closing connection", True,
                     id="exim"),
        pytest.param("421 4.4.2 Connection dropped due to idle timeout", True, id="idle"),
        pytest.param("421 4.7.0 Too many connections, try again after a timeout", False,
                     id="a_limit"),
        pytest.param("421 4.7.0 Greylisted, timed out: try again later", False, id="greylisted"),
        pytest.param("421 4.3.2 Service not available, closing channel", False, id="shutting"),
        pytest.param("451 4.4.2 Timeout exceeded", False, id="not_a_421"),
    ],
)  # fmt: skip
def test_a_421_closing_an_idle_connection_is_told_from_the_others(line: str, idle: bool) -> None:
    assert closes_an_idle_connection(reply(line)) is idle


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            "550-5.1.1 The email account that you tried to reach does not exist. Please try\n"
            "550-5.1.1 double-checking the recipient's email address for typos or\n"
            "550 5.1.1 unnecessary spaces.",
            id="gmail_no_such_account",
        ),
        pytest.param(
            "550 5.2.1 The email account that you tried to reach is disabled.", id="gmail_disabled"
        ),
        pytest.param(
            "550 5.1.1 <ana@example.com>: Recipient address rejected: User unknown in local "
            "recipient table",
            id="postfix_local",
        ),
        pytest.param(
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient ana@example.com not found by "
            "SMTP address lookup",
            id="exchange_online_not_found",
        ),
        pytest.param("556 5.1.10 Recipient address has null MX", id="null_mx_rfc7505"),
        pytest.param("550 5.1.2 Host unknown (Name server: example.invalid)", id="no_domain"),
        pytest.param("501 5.1.3 Bad recipient address syntax", id="syntax"),
        pytest.param("550 5.1.1 Injected permanent failure: no such recipient", id="the_sink"),
        pytest.param("550 sorry, no mailbox here by that name. (#5.1.1)", id="qmail"),
        pytest.param("550 #5.1.1 Address rejected ana@example.com", id="hash_prefixed"),
        pytest.param("550 No such user here", id="bare_550"),
        pytest.param("551 User not local; please try <ana@example.org>", id="bare_551"),
        pytest.param("553 Requested action not taken: mailbox name not allowed", id="bare_553"),
    ],
)
def test_a_permanent_refusal_of_the_address_suppresses_it(line: str) -> None:
    assert suppresses(reply(line))


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            "550-5.7.26 This mail is unauthenticated, which poses a security risk to the\n"
            "550 5.7.26 sender and Gmail users, and has been blocked.",
            id="gmail_policy",
        ),
        pytest.param("554 5.7.1 <ana@example.com>: Relay access denied", id="relay_denied"),
        pytest.param("550 Relaying denied", id="bare_relaying_denied"),
        pytest.param(
            "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
            id="qmail_relay",
        ),
        pytest.param(
            "550 5.1.8 <demo@example.com>: Sender address rejected: Domain not found",
            id="postfix_sender_at_rcpt",
        ),
        pytest.param("553 Sender address rejected: not owned by user demo", id="bare_sender"),
        pytest.param("550 Blocked by policy: your IP is listed", id="bare_policy"),
        pytest.param(
            "552 5.2.2 The email account that you tried to reach is over quota.", id="full"
        ),
        pytest.param("450 4.1.1 <ana@example.com>: Recipient address rejected", id="a_4xx"),
        pytest.param("451 4.7.1 Greylisted: try again in 38 seconds", id="greylisting"),
        pytest.param("554 Transaction failed", id="bare_554"),
        pytest.param("552 Message size exceeds fixed maximum message size", id="bare_552"),
        pytest.param(
            "550 5.5.0 Requested action not taken: mailbox unavailable", id="x5_the_cautious_side"
        ),
        pytest.param("550 4.1.1 User unknown", id="a_status_that_contradicts_its_code"),
        pytest.param("250 2.1.5 Ok", id="a_250"),
    ],
)
def test_other_refusals_do_not_suppress_the_address(line: str) -> None:
    assert not suppresses(reply(line))


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("550 5.1.1 no such user", (5, 1, 1)),
        ("550 5.1.10 not found", (5, 1, 10)),
        ("451 4.7.500 Server busy", (4, 7, 500)),
        ("550 #5.1.1 no mailbox", (5, 1, 1)),
        ("553 no relay (#5.7.1)", (5, 7, 1)),
        ("550 No such user here", None),
        ("550 version 5.1.1 of the filter says no", None),
        ("550 5.1.1.2 is not one", None),
    ],
)
def test_the_enhanced_status_is_read_where_servers_write_it(
    line: str, status: tuple[int, int, int] | None
) -> None:
    assert enhanced_status(reply(line)) == status
