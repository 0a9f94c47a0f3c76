"""What the sink's SMTP offers besides plain SMTP: STARTTLS or implicit TLS, and AUTH.

Decided once at start from the settings; settings that contradict each other, or a file that
cannot be used, are one line naming the setting (SecurityError), never a traceback. An auth file
that other users may read is a warning.
"""

from __future__ import annotations

import logging
import ssl
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from services.smtp_sink.smtp.auth import (
    MECHANISMS,
    AuthFileError,
    FileAuthenticator,
    parse_auth_file,
)
from shared.settings import Settings

TlsMode = Literal["none", "starttls", "implicit"]


class SecurityError(Exception):
    """One line that names the setting to fix."""


@dataclass(frozen=True)
class SecurityPlan:
    tls: TlsMode
    require_starttls: bool
    cert_file: Path | None
    key_file: Path | None
    auth_file: Path | None

    @property
    def auth_require_tls(self) -> bool:
        """aiosmtpd's `auth_require_tls`: AUTH only after STARTTLS whenever STARTTLS is offered,
        as a production relay has it. With implicit TLS the connection already is TLS, and
        without TLS an auth file means AUTH in the clear (the client decides whether it sends
        a password so); with no auth file, AUTH stays hidden from plaintext EHLO, as before."""
        return self.tls == "starttls" or self.auth_file is None


def plan_security(settings: Settings) -> SecurityPlan:
    """The plan the settings describe, or the SecurityError of the first contradiction."""
    cert, key = settings.sink_tls_cert_file, settings.sink_tls_key_file
    if cert is not None and key is None:
        raise SecurityError(f"SINK_TLS_CERT_FILE={cert} needs SINK_TLS_KEY_FILE, its private key")
    if key is not None and cert is None:
        raise SecurityError(f"SINK_TLS_KEY_FILE={key} needs SINK_TLS_CERT_FILE, its certificate")
    if cert is None:
        if settings.sink_require_starttls:
            raise SecurityError(
                "SINK_REQUIRE_STARTTLS=true needs SINK_TLS_CERT_FILE and SINK_TLS_KEY_FILE"
            )
        if settings.sink_tls_implicit:
            raise SecurityError(
                "SINK_TLS_IMPLICIT=true needs SINK_TLS_CERT_FILE and SINK_TLS_KEY_FILE"
            )
    if settings.sink_tls_implicit and settings.sink_require_starttls:
        raise SecurityError(
            "SINK_REQUIRE_STARTTLS=true and SINK_TLS_IMPLICIT=true contradict each other: "
            "with implicit TLS every connection is TLS from the start, there is no STARTTLS"
        )
    tls: TlsMode = "none"
    if cert is not None:
        tls = "implicit" if settings.sink_tls_implicit else "starttls"
    return SecurityPlan(
        tls=tls,
        require_starttls=settings.sink_require_starttls,
        cert_file=cert,
        key_file=key,
        auth_file=settings.sink_auth_file,
    )


@dataclass(frozen=True)
class SmtpSecurity:
    plan: SecurityPlan
    tls_context: ssl.SSLContext | None
    authenticator: FileAuthenticator | None
    auth_file_mode: int | None = None  # its st_mode, as read at start

    @property
    def starttls_context(self) -> ssl.SSLContext | None:
        """aiosmtpd's `tls_context`: what STARTTLS upgrades with."""
        return self.tls_context if self.plan.tls == "starttls" else None

    @property
    def listening_context(self) -> ssl.SSLContext | None:
        """The listening socket's TLS, for implicit TLS."""
        return self.tls_context if self.plan.tls == "implicit" else None

    def offers(self) -> list[str]:
        """What the sink logs at start, a line each: what clients can and must do."""
        lines = []
        if self.plan.tls == "starttls":
            required = "required" if self.plan.require_starttls else "optional"
            lines.append(f"STARTTLS offered ({required}), certificate {self.plan.cert_file}")
        elif self.plan.tls == "implicit":
            lines.append(f"implicit TLS on every connection, certificate {self.plan.cert_file}")
        if self.authenticator is not None:
            count = self.authenticator.user_count
            users = f"{count} user" if count == 1 else f"{count} users"
            over = {
                "starttls": "after STARTTLS only",
                "implicit": "over TLS",
                "none": "over plaintext: no TLS is configured",
            }[self.plan.tls]
            lines.append(f"AUTH required ({', '.join(MECHANISMS)}; {users}), {over}")
        return lines

    def warnings(self) -> list[str]:
        """What the sink warns about at start, a line each: settings that work but are unsafe."""
        if self.plan.auth_file is None or self.auth_file_mode is None:
            return []
        exposure = auth_file_exposure(self.plan.auth_file, self.auth_file_mode)
        return [] if exposure is None else [exposure]


def auth_file_exposure(auth_file: Path, mode: int) -> str | None:
    """The warning for an auth file that users other than its owner may read or change (it
    holds the passwords in clear), or None for one that only its owner may use."""
    open_to = [who for who, bits in (("its group", 0o070), ("other users", 0o007)) if mode & bits]
    if not open_to:
        return None
    return (
        f"SINK_AUTH_FILE={auth_file} holds the sink's passwords, but its mode "
        f"{stat.S_IMODE(mode):04o} opens it to {' and '.join(open_to)}: "
        f"run chmod 600 {auth_file}"
    )


def load_security(settings: Settings) -> SmtpSecurity:
    """Read the certificate, its key and the auth file once; SecurityError names what failed."""
    plan = plan_security(settings)
    tls_context = None
    if plan.cert_file is not None and plan.key_file is not None:
        tls_context = _server_context(plan.cert_file, plan.key_file)
    authenticator = auth_file_mode = None
    if plan.auth_file is not None:
        authenticator = FileAuthenticator(_read_users(plan.auth_file))
        auth_file_mode = _mode(plan.auth_file)
    return SmtpSecurity(plan, tls_context, authenticator, auth_file_mode)


def _server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    for setting, path in (("SINK_TLS_CERT_FILE", cert_file), ("SINK_TLS_KEY_FILE", key_file)):
        try:
            path.read_bytes()
        except OSError as error:
            raise SecurityError(f"{setting}={path}: {error.strerror or error}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as error:
        raise SecurityError(_unusable_pair(cert_file, key_file, error)) from None
    return context


def _unusable_pair(cert_file: Path, key_file: Path, error: ssl.SSLError) -> str:
    """Which file is wrong: OpenSSL only says "PEM lib" whichever it is."""
    try:
        x509.load_pem_x509_certificates(cert_file.read_bytes())
    except ValueError:
        return f"SINK_TLS_CERT_FILE={cert_file}: no PEM certificate in it"
    try:
        serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except TypeError:
        return f"SINK_TLS_KEY_FILE={key_file}: the key is encrypted; the sink needs it unencrypted"
    except (ValueError, UnsupportedAlgorithm):
        return f"SINK_TLS_KEY_FILE={key_file}: no PEM private key in it"
    return (
        f"SINK_TLS_KEY_FILE={key_file} is not the key of SINK_TLS_CERT_FILE={cert_file}: "
        f"{error.reason or error}"
    )


def _read_users(auth_file: Path) -> dict[bytes, bytes]:
    try:
        text = auth_file.read_text(encoding="utf-8")
    except OSError as error:
        raise SecurityError(f"SINK_AUTH_FILE={auth_file}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise SecurityError(f"SINK_AUTH_FILE={auth_file}: not UTF-8 text") from None
    try:
        return parse_auth_file(text)
    except AuthFileError as error:
        raise SecurityError(f"SINK_AUTH_FILE={auth_file}: {error}") from None


def _mode(auth_file: Path) -> int:
    try:
        return auth_file.stat().st_mode
    except OSError as error:
        raise SecurityError(f"SINK_AUTH_FILE={auth_file}: {error.strerror or error}") from None


# aiosmtpd says these again on every connection; the sink says what it offers once, at start.
_REPEATED_PER_CONNECTION = (
    "auth_required == True but auth_require_tls == False",
    "Session.login_data is deprecated",
)


class RepeatedPerConnection(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_REPEATED_PER_CONNECTION)


def quiet_aiosmtpd_repeats() -> None:
    logging.getLogger("mail.log").addFilter(RepeatedPerConnection())
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
