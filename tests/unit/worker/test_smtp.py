"""The SMTP settings checked at start: credentials never go out unencrypted unless a setting says
so, both or neither of username and password, a CA file that loads; the password never shows.
And, with aiosmtplib's client scripted, whose fault a failed transaction is: the relay's while
MAIL FROM has not been answered (RelayUnavailable), the email's after."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from aiosmtplib import (
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPResponse,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from pydantic import SecretStr

from services.worker import smtp
from services.worker.mime import OutgoingEmail, render_email
from services.worker.smtp import SmtpConnection, SmtpServer, SmtpSettingsError, smtp_server
from services.worker.smtp_failures import ConfigurationFault, OutcomeUnknown, RelayUnavailable
from shared.settings import Settings
from tests.unit.worker.fakes import email_record

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _no_smtp_settings_around(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the values a test gives: not the developer's environment."""
    for name in Settings.model_fields:
        if name.startswith("smtp_"):
            monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("SMTP_TIMEOUT", raising=False)


def settings(**values: object) -> Settings:
    fields = {"smtp_host": "smtp.example.com", "smtp_port": 587, **values}
    return Settings(_env_file=None, **fields)  # type: ignore[arg-type]


def test_the_defaults_deliver_to_the_local_sink_in_the_clear_without_auth() -> None:
    server = smtp_server(Settings(_env_file=None))

    assert (server.host, server.port, server.tls) == ("localhost", 1025, "none")
    assert (server.tls_context, server.username, server.password) == (None, None, None)
    assert server.describe() == "localhost:1025 (no TLS)"


def test_credentials_over_plaintext_are_refused_naming_both_settings() -> None:
    with pytest.raises(SmtpSettingsError) as refused:
        smtp_server(settings(smtp_username="ana", smtp_password=PASSWORD))

    message = str(refused.value)
    assert "SMTP_TLS=starttls" in message
    assert "SMTP_ALLOW_PLAINTEXT_AUTH=true" in message
    assert "\n" not in message
    assert PASSWORD not in message


def test_credentials_over_plaintext_when_the_setting_says_so() -> None:
    server = smtp_server(
        settings(smtp_username="ana", smtp_password=PASSWORD, smtp_allow_plaintext_auth=True)
    )

    assert server.username == "ana"
    assert server.describe() == "smtp.example.com:587 (no TLS, AUTH as ana)"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"smtp_username": "ana"}, "SMTP_PASSWORD is not"),
        ({"smtp_password": PASSWORD}, "SMTP_USERNAME is not"),
    ],
)
def test_username_and_password_come_together(values: dict[str, str], named: str) -> None:
    with pytest.raises(SmtpSettingsError, match=named):
        smtp_server(settings(smtp_tls="starttls", **values))


def test_empty_values_in_dot_env_mean_unset() -> None:
    server = smtp_server(settings(smtp_username="", smtp_password=""))

    assert (server.username, server.password) == (None, None)


def test_starttls_trusts_the_system_and_the_extra_ca(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))

    server = smtp_server(
        settings(
            smtp_tls="starttls", smtp_username="ana", smtp_password=PASSWORD, smtp_ca_file=ca_file
        )
    )

    assert server.tls_context is not None
    assert server.tls_context.verify_mode == ssl.CERT_REQUIRED
    assert server.tls_context.check_hostname
    system_cas = len(ssl.create_default_context().get_ca_certs())
    assert len(server.tls_context.get_ca_certs()) == system_cas + 1
    assert server.describe() == "smtp.example.com:587 (STARTTLS, AUTH as ana)"


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_ca_file_that_does_not_load_is_named(tmp_path: Path, content: str | None) -> None:
    ca_file = tmp_path / "ca.pem"
    if content is not None:
        ca_file.write_text(content)

    with pytest.raises(SmtpSettingsError, match=f"SMTP_CA_FILE={ca_file} cannot be loaded"):
        smtp_server(settings(smtp_tls="tls", smtp_ca_file=ca_file))


def test_the_password_is_in_no_repr() -> None:
    values = settings(smtp_tls="tls", smtp_username="ana", smtp_password=PASSWORD)
    server = smtp_server(values)

    for shown in (repr(values), str(values), repr(server), str(server)):
        assert PASSWORD not in shown
    assert PASSWORD not in repr(SmtpConnection(server))
    assert server.password == SecretStr(PASSWORD)


MAIL_TAKEN = SMTPResponse(250, "2.1.0 Ok")


class ScriptedClient:
    """aiosmtplib's SMTP as SmtpConnection drives it, in memory: every step answers as a relay
    that takes the email, but the step named `fails`, which raises `error`, and RCPT for the
    addresses in `refuses`."""

    def __init__(
        self,
        fails: str | None = None,
        error: BaseException | None = None,
        refuses: dict[str, SMTPResponse] | None = None,
        mail_reply: SMTPResponse = MAIL_TAKEN,
    ) -> None:
        self.fails = fails
        self.error = error or SMTPServerDisconnected("Connection lost")
        self.refuses = refuses or {}
        self.mail_reply = mail_reply
        self.steps: list[str] = []
        self.is_connected = False
        self.protocol = self  # DATA's end is written to the protocol, and its reply read there

    def _step(self, name: str) -> None:
        self.steps.append(name)
        if name == self.fails:
            self.is_connected = False
            raise self.error

    async def connect(self) -> None:
        self._step("connect")
        self.is_connected = True

    async def ehlo(self) -> None:
        self._step("EHLO")

    def supports_extension(self, name: str) -> bool:
        return False

    async def execute_command(
        self,
        command: bytes,
        *args: bytes,
        timeout: float,  # noqa: ASYNC109 - aiosmtplib's signature
    ) -> SMTPResponse:
        self._step(command.decode())
        if command == b"MAIL":
            return self.mail_reply
        if command == b"RCPT":
            address = args[0].decode().removeprefix("TO:<").removesuffix(">")
            return self.refuses.get(address, SMTPResponse(250, "2.1.5 Ok"))
        return SMTPResponse(354, "End data with <CR><LF>.<CR><LF>")  # DATA

    def write(self, data: bytes) -> None:
        self._step("message")

    async def read_response(self, timeout: float) -> SMTPResponse:  # noqa: ASYNC109 - as above
        self._step("final reply")
        return SMTPResponse(250, "2.0.0 Ok: queued as 4F2A")

    def close(self) -> None:
        self.is_connected = False

    async def quit(self) -> None:
        self.is_connected = False


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedClient]:
    """The clients SmtpConnection will open, in order: a test appends them."""
    clients: list[ScriptedClient] = []
    monkeypatch.setattr(smtp, "SMTP", lambda **options: clients.pop(0))
    return clients


def connection() -> SmtpConnection:
    return SmtpConnection(SmtpServer("relay.test", 25, timeout_seconds=5))


def an_email(*to: str) -> OutgoingEmail:
    return render_email(email_record("m-1", to=list(to) or ["ana@example.com"]), "pipeline.test")


async def test_a_transaction_returns_the_final_reply_and_the_recipients_refused(
    relay: list[ScriptedClient],
) -> None:
    no_such_user = SMTPResponse(550, "5.1.1 no such user")
    relay.append(ScriptedClient(refuses={"bob@example.com": no_such_user}))
    email = an_email("ana@example.com", "bob@example.com")

    transaction = await connection().send(email, email.recipients)

    assert transaction.reply == SMTPResponse(250, "2.0.0 Ok: queued as 4F2A")
    assert transaction.refused == {"bob@example.com": no_such_user}


@pytest.mark.parametrize(
    ("fails", "error"),
    [
        pytest.param("connect", ConnectionRefusedError(111, "Connect call failed"), id="refused"),
        pytest.param("connect", SMTPConnectTimeoutError("Timed out connecting"), id="timed_out"),
        pytest.param(
            "connect", SMTPConnectResponseError(421, "4.3.2 too busy"), id="a_4xx_greeting"
        ),
        pytest.param("EHLO", SMTPServerDisconnected("Connection lost"), id="lost_at_ehlo"),
        pytest.param("MAIL", SMTPServerDisconnected("Connection lost"), id="a_stale_connection"),
        pytest.param("MAIL", SMTPReadTimeoutError("Timed out"), id="no_reply_to_mail_from"),
    ],
)
async def test_a_failure_before_mail_from_is_answered_is_the_relays(
    relay: list[ScriptedClient], fails: str, error: BaseException
) -> None:
    relay.append(ScriptedClient(fails, error))

    with pytest.raises(RelayUnavailable) as unavailable:
        await connection().send(an_email(), ["ana@example.com"])

    assert str(unavailable.value).startswith(f"relay.test:25: {type(error).__name__}: ")
    assert unavailable.value.__cause__ is error


@pytest.mark.parametrize(
    ("fails", "error", "raised"),
    [
        pytest.param("RCPT", SMTPServerDisconnected("lost"), SMTPServerDisconnected, id="rcpt"),
        pytest.param("DATA", SMTPReadTimeoutError("Timed out"), SMTPReadTimeoutError, id="data"),
        pytest.param("message", ConnectionResetError(), ConnectionResetError, id="message"),
        pytest.param("final reply", SMTPServerDisconnected("lost"), OutcomeUnknown, id="end"),
    ],
)
async def test_a_failure_once_mail_from_was_answered_is_the_emails(
    relay: list[ScriptedClient], fails: str, error: BaseException, raised: type[Exception]
) -> None:
    relay.append(ScriptedClient(fails, error))

    with pytest.raises(raised) as failed:
        await connection().send(an_email(), ["ana@example.com"])

    assert not isinstance(failed.value, RelayUnavailable)


async def test_a_refusal_of_mail_from_is_the_emails(relay: list[ScriptedClient]) -> None:
    relay.append(ScriptedClient(mail_reply=SMTPResponse(451, "4.3.0 try again later")))

    with pytest.raises(SMTPSenderRefused) as refused:
        await connection().send(an_email(), ["ana@example.com"])

    assert refused.value.code == 451


async def test_a_session_refused_before_any_email_is_a_configuration_fault_not_the_relays(
    relay: list[ScriptedClient],
) -> None:
    relay.append(ScriptedClient("connect", SMTPConnectResponseError(554, "5.7.1 no service")))

    with pytest.raises(ConfigurationFault) as refused:
        await connection().send(an_email(), ["ana@example.com"])

    assert refused.value.kind == "session_refused"


async def test_a_relay_without_smtputf8_is_the_emails_trouble_not_the_relays(
    relay: list[ScriptedClient],
) -> None:
    relay.append(ScriptedClient())
    email = an_email("José <josé@example.com>")

    with pytest.raises(SMTPNotSupported):
        await connection().send(email, email.recipients)


async def test_a_stale_connection_is_dropped_and_the_next_send_opens_a_fresh_one(
    relay: list[ScriptedClient],
) -> None:
    stale, fresh = ScriptedClient("MAIL"), ScriptedClient()
    relay.extend([stale, fresh])
    pooled = connection()

    with pytest.raises(RelayUnavailable):
        await pooled.send(an_email(), ["ana@example.com"])
    await pooled.send(an_email(), ["ana@example.com"])

    assert stale.steps == ["connect", "EHLO", "MAIL"]
    assert fresh.steps == ["connect", "EHLO", "MAIL", "RCPT", "DATA", "message", "final reply"]
    assert relay == [], "opened once each"
