"""What a failed SMTP attempt means: transient, permanent, or a refusal of the worker's own
settings (a configuration fault), never the email's."""

from __future__ import annotations

import ssl

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

from services.worker.smtp_failures import ConfigurationFault, classify


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
