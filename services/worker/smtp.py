"""The worker's edge toward the SMTP server: persistent connections (shared by the lanes through
smtp_pool.py), in the clear, over STARTTLS or over TLS, logged in when credentials are set, and
each email's transaction pipelined (RFC 2920) when the server offers it."""

from __future__ import annotations

import contextlib
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPStatus,
)
from pydantic import SecretStr

from services.worker import metrics
from services.worker.mime import OutgoingEmail
from services.worker.send_limiter import SendLimiter
from services.worker.smtp_data import send_data
from services.worker.smtp_failures import (
    ConfigurationFault,
    RelayUnavailable,
    closes_an_idle_connection,
)
from services.worker.smtp_protocol import SessionProtocol, take_over
from shared.settings import Settings

TlsMode = Literal["none", "starttls", "tls"]
# Postfix counts what a client gets refused until it delivers an email, and from 10 refusals
# (smtpd_soft_error_limit) delays every reply by a second: a connection refused this many
# recipients since its last email is dropped, not reset, which starts the count afresh.
REFUSALS_BEFORE_A_FRESH_CONNECTION = 5


@dataclass(frozen=True)
class Transaction:
    """What the server said to one email it took: its reply to the final "." (the `250 2.0.0
    Ok: queued as ...` that a sent event keeps), and its replies to the recipients it refused."""

    reply: SMTPResponse
    refused: dict[str, SMTPResponse]


class SmtpSettingsError(Exception):
    """SMTP settings that cannot work: the worker says which in one line and does not start."""


@dataclass(frozen=True)
class SmtpServer:
    """Where and how every lane delivers, checked once at start."""

    host: str
    port: int
    timeout_seconds: float  # connecting, the greeting, EHLO, STARTTLS, AUTH
    # One transaction's waits, RFC 5321 4.5.3.2: MAIL and RCPT, DATA's 354, the final reply.
    command_timeout_seconds: float = 300.0
    data_timeout_seconds: float = 120.0
    data_end_timeout_seconds: float = 600.0
    tls: TlsMode = "none"
    tls_context: ssl.SSLContext | None = None  # for starttls and tls
    username: str | None = None
    password: SecretStr | None = None  # a secret until the moment of AUTH
    allow_plaintext_auth: bool = False

    def __post_init__(self) -> None:
        if self.username is not None and self.password is None:
            raise SmtpSettingsError(
                "SMTP_USERNAME is set but SMTP_PASSWORD is not: set both, or neither"
            )
        if self.password is not None and self.username is None:
            raise SmtpSettingsError(
                "SMTP_PASSWORD is set but SMTP_USERNAME is not: set both, or neither"
            )
        if self.username is not None and self.tls == "none" and not self.allow_plaintext_auth:
            raise SmtpSettingsError(
                "SMTP_USERNAME and SMTP_PASSWORD are set but SMTP_TLS=none would send them "
                "unencrypted: set SMTP_TLS=starttls (port 587) or SMTP_TLS=tls (port 465), or "
                "SMTP_ALLOW_PLAINTEXT_AUTH=true if this connection needs no encryption"
            )
        if self.tls != "none" and self.tls_context is None:
            raise SmtpSettingsError(f"SMTP_TLS={self.tls} needs a TLS context")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """For the start-up log line: `smtp.example.com:587 (STARTTLS, AUTH as ana)`."""
        security = {"none": "no TLS", "starttls": "STARTTLS", "tls": "TLS"}[self.tls]
        login = f", AUTH as {self.username}" if self.username is not None else ""
        return f"{self.address} ({security}{login})"


def smtp_server(settings: Settings) -> SmtpServer:
    """The server the settings describe; SmtpSettingsError if they cannot work together."""
    # An empty value in .env (`SMTP_USERNAME=`) means unset, as an absent one does.
    password = settings.smtp_password
    return SmtpServer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        timeout_seconds=settings.smtp_timeout_seconds,
        command_timeout_seconds=settings.smtp_command_timeout_seconds,
        data_timeout_seconds=settings.smtp_data_timeout_seconds,
        data_end_timeout_seconds=settings.smtp_data_end_timeout_seconds,
        tls=settings.smtp_tls,
        tls_context=None if settings.smtp_tls == "none" else tls_context(settings.smtp_ca_file),
        username=settings.smtp_username or None,
        password=password if password is not None and password.get_secret_value() else None,
        allow_plaintext_auth=settings.smtp_allow_plaintext_auth,
    )


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """The system's CAs, and ca_file's too: certificates and host names are always verified."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except OSError as error:  # missing, unreadable, or not PEM (ssl.SSLError)
            raise SmtpSettingsError(
                f"SMTP_CA_FILE={ca_file} cannot be loaded as PEM certificates: {error}"
            ) from None
    return context


class SmtpConnection:
    """Opened on first use, reused for every email, and opened afresh after any failure."""

    def __init__(self, server: SmtpServer, limiter: SendLimiter | None = None) -> None:
        self._server = server
        self._limiter = limiter  # the worker's sending budget: a turn before each MAIL FROM
        self._client: SMTP | None = None  # aiosmtplib's, which opens the session
        self._session: SessionProtocol | None = None  # the open session, once taken over
        # True from the moment the final "." of DATA is handed to the socket until the reply:
        # the server may be storing the email, so a stop must wait rather than cut it off.
        self.awaiting_final_reply = False
        self._mail_answered = False  # the server answered MAIL FROM in this transaction
        self._refusals_since_delivery = 0  # recipients refused since the last email taken

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> Transaction:
        """Send one email: the server's reply to the final "." and the recipients it refused
        while taking the rest.

        Raises ConfigurationFault when the server refuses the connection's settings (TLS,
        credentials), RelayUnavailable when it cannot be reached or fails before it takes MAIL
        FROM (no email is at fault), and OutcomeUnknown when the reply to the final "." never
        came."""
        self._mail_answered = False
        try:
            session = await self._connected()
            if self._limiter is not None:
                await self._limiter.turn()  # with the connection in hand, right before MAIL
            started = time.perf_counter()
            transaction = await self._transaction(session, email, recipients)
        except SMTPRecipientsRefused:
            raise  # the transaction was reset (_reset_after_refusals), or the connection dropped
        except BaseException as error:
            # A half-finished exchange leaves the connection in an unknown state: drop it.
            self._drop()
            if not self._mail_answered and _the_relays_trouble(error):
                raise RelayUnavailable(
                    f"{self._server.address}: {type(error).__name__}: {error}"
                ) from error
            raise
        finally:
            self.awaiting_final_reply = False
        metrics.DELIVERY_DURATION.observe(time.perf_counter() - started)
        return transaction

    async def _transaction(
        self, session: SessionProtocol, email: OutgoingEmail, recipients: list[str]
    ) -> Transaction:
        """MAIL, RCPT for each recipient, DATA: what aiosmtplib's sendmail does, raising the
        same errors, minus its parsing of every address again (a tenth of the worker's CPU):
        ours are bare addresses already. When the server offers PIPELINING, MAIL, every RCPT
        and DATA go in one write and their replies are read in order (two round trips, not
        four). Each reply is waited for as long as RFC 5321 allows."""
        server = self._server
        options = b""
        if email.smtputf8:
            if not session.smtputf8:
                raise SMTPNotSupported(
                    f"{server.address} does not offer SMTPUTF8, which a mailbox of this email "
                    "needs (its local part is not ASCII); ask the relay's operator for SMTPUTF8 "
                    "(RFC 6531), or write the address in ASCII"
                )
            options = b" SMTPUTF8 BODY=8BITMIME"
        encoding = "utf-8" if email.smtputf8 else "ascii"
        mail = b"MAIL FROM:<" + email.sender.encode(encoding) + b">" + options
        rcpts = [b"RCPT TO:<" + recipient.encode(encoding) + b">" for recipient in recipients]
        wait = server.command_timeout_seconds

        pipelined = session.pipelining
        if pipelined:
            session.send(mail, *rcpts, b"DATA")
        else:
            session.send(mail)
        response = await session.reply(wait)
        if closes_an_idle_connection(response):  # no email was named to it
            raise SMTPResponseException(response.code, response.message)
        self._mail_answered = True
        if response.code != SMTPStatus.completed:
            raise SMTPSenderRefused(response.code, response.message, email.sender)
        refused: dict[str, SMTPResponse] = {}
        for recipient, rcpt in zip(recipients, rcpts, strict=True):
            if not pipelined:
                session.send(rcpt)
            response = await session.reply(wait)
            if response.code == SMTPStatus.domain_unavailable:
                # 421: the relay closes the connection: the whole transaction is refused, not
                # this recipient.
                raise SMTPResponseException(response.code, response.message)
            if not 200 <= response.code < 300:  # 250, 251, or any 2xx: taken
                refused[recipient] = response
        if len(refused) == len(recipients):
            self._refusals_since_delivery += len(refused)
            await self._reset_after_refusals(session, pipelined)
            raise SMTPRecipientsRefused(
                [SMTPRecipientRefused(r.code, r.message, address) for address, r in refused.items()]
            )
        if not pipelined:
            session.send(b"DATA")
        reply = await send_data(
            session,
            email.data,
            start_timeout=server.data_timeout_seconds,
            end_timeout=server.data_end_timeout_seconds,
            final_dot_sent=self._final_dot_sent,
        )
        self._refusals_since_delivery = 0
        return Transaction(reply, refused)

    async def _reset_after_refusals(self, session: SessionProtocol, pipelined: bool) -> None:
        """End a transaction whose every recipient was refused and keep the connection for
        the next email, as RFC 2920 3.1 has it: pipelined, DATA's reply is read, and a 354
        (a server may accept DATA without a recipient) is answered with a lone "."; then RSET.
        Anything but a 250 to it, no reply in time, or too many refusals on this connection
        (REFUSALS_BEFORE_A_FRESH_CONNECTION) drops the connection instead."""
        if self._refusals_since_delivery >= REFUSALS_BEFORE_A_FRESH_CONNECTION:
            self._drop()
            return
        wait = self._server.timeout_seconds  # the refusals are known: a short wait, as EHLO's
        try:
            if pipelined and (await session.reply(wait)).code == SMTPStatus.start_input:
                session.send_message(b".\r\n")  # an empty message, with no one to go to
                await session.reply(wait)
            session.send(b"RSET")
            if (await session.reply(wait)).code != SMTPStatus.completed:
                self._drop()
        except SMTPException:  # lost, timed out, unreadable
            self._drop()  # the refusals stand all the same

    @property
    def is_open(self) -> bool:
        return self._session is not None and self._session.is_open

    def _final_dot_sent(self) -> None:
        self.awaiting_final_reply = True

    async def close(self) -> None:
        session = self._session
        try:
            if session is not None and session.is_open:
                with contextlib.suppress(Exception):  # closed all the same
                    await session.quit(self._server.timeout_seconds)
        finally:
            self._drop()

    def _drop(self) -> None:
        client, self._client, self._session = self._client, None, None
        self._refusals_since_delivery = 0
        if client is not None:
            client.close()

    async def _connected(self) -> SessionProtocol:
        if self._session is None or not self._session.is_open:
            self._drop()
            server = self._server
            self._client = SMTP(
                hostname=server.host,
                port=server.port,
                timeout=server.timeout_seconds,
                use_tls=server.tls == "tls",
                # Never aiosmtplib's default (upgrade if offered, else carry on in the clear):
                # STARTTLS happens when the settings say so, and then it must.
                start_tls=False,
                tls_context=server.tls_context,
            )
            await self._open(self._client)
            self._session = take_over(self._client)
        return self._session

    async def _open(self, client: SMTP) -> None:
        """Connect, EHLO, STARTTLS and EHLO again, AUTH: what fails here is about the worker's
        settings or the server, never about an email."""
        try:
            await client.connect()
            await _greet(client)
            if self._server.tls == "starttls":
                await self._start_tls(client)
            if self._server.username is not None and self._server.password is not None:
                await self._log_in(client, self._server.username, self._server.password)
        except ConfigurationFault:
            raise
        except Exception as error:
            address = self._server.address
            if (tls_error := _ssl_error(error)) is not None:
                raise ConfigurationFault("tls", _tls_failure(address, tls_error)) from error
            if isinstance(error, SMTPResponseException) and error.code >= 500:
                raise ConfigurationFault(
                    "session_refused",
                    f"{address} refused the session before any email ({error.code} "
                    f"{error.message}); check SMTP_HOST and SMTP_PORT",
                ) from error
            raise  # lost, refused, timed out, 4xx: transient

    async def _start_tls(self, client: SMTP) -> None:
        address = self._server.address
        if not client.supports_extension("starttls"):
            raise ConfigurationFault(
                "starttls_not_offered",
                f"{address} does not offer STARTTLS, and SMTP_TLS=starttls never falls back to "
                "plaintext; check SMTP_TLS (tls for TLS from the start, usually port 465) and "
                "SMTP_PORT",
            )
        try:
            await client.starttls()
        except SMTPResponseException as error:
            raise ConfigurationFault(
                "tls",
                f"{address} refused STARTTLS ({error.code} {error.message}); check SMTP_TLS",
            ) from error
        # RFC 3207: what the server offered before TLS no longer holds; ask again.
        await _greet(client)

    async def _log_in(self, client: SMTP, username: str, password: SecretStr) -> None:
        address = self._server.address
        if not client.supports_extension("auth") or not client.supported_auth_methods:
            offered = ", ".join(client.server_auth_methods) or "no AUTH"
            raise ConfigurationFault(
                "auth_not_offered",
                f"{address} offers no AUTH mechanism the worker speaks (CRAM-MD5, PLAIN, LOGIN; "
                f"it offers {offered}), and SMTP_USERNAME is set; check SMTP_TLS (servers often "
                "offer AUTH only over TLS) and SMTP_USERNAME",
            )
        try:
            await client.login(username, password.get_secret_value())
        except SMTPAuthenticationError as error:
            if error.code < 500:
                raise  # 454: a temporary failure on the server's side, retried as any other
            check = (
                "SMTP_USERNAME/SMTP_PASSWORD"
                if error.code == 535
                else "SMTP_TLS, SMTP_USERNAME and SMTP_PASSWORD"
            )
            raise ConfigurationFault(
                "authentication",
                f"SMTP authentication refused by {address} ({error.code} {error.message}); "
                f"check {check}",
            ) from error


def _the_relays_trouble(error: BaseException) -> bool:
    """A failure before the server answered MAIL FROM, and not about the worker's settings or
    this email (its SMTPUTF8 addresses, an address that cannot be encoded)."""
    return isinstance(error, Exception) and not isinstance(
        error, ConfigurationFault | SMTPNotSupported | ValueError
    )


async def _greet(client: SMTP) -> None:
    try:
        await client.ehlo()
    except SMTPHeloError:
        await client.helo()


def _ssl_error(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a failed handshake (aiosmtplib wraps it at connect), unless it is
    the connection closing under it: a server restarting is not a configuration fault."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _tls_failure(address: str, error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"the TLS certificate of {address} is not trusted ({error.verify_message}); check "
            "SMTP_CA_FILE (a CA to trust besides the system's) and SMTP_HOST (the name the "
            "certificate is for)"
        )
    return (
        f"TLS with {address} failed ({error.reason or error}); check SMTP_TLS (starttls for "
        "port 587, tls for port 465) and SMTP_CA_FILE"
    )
