"""The SMTP settings checked at start: credentials never go out unencrypted unless a setting says
so, both or neither of username and password, a CA file that loads; the password never shows.
And, with aiosmtplib's client and the relay scripted: a transaction pipelined (RFC 2920) when the
relay offers it, one command at a time when not, with the same outcome and the same errors;
whose fault a failed transaction is: the relay's while MAIL FROM has not been answered
(RelayUnavailable), the email's after."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtplib import (
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientsRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)
from pydantic import SecretStr

from services.worker import smtp
from services.worker.mime import OutgoingEmail, render_email
from services.worker.send_limiter import SendLimiter
from services.worker.smtp import SmtpConnection, SmtpServer, SmtpSettingsError, smtp_server
from services.worker.smtp_failures import (
    ConfigurationFault,
    OutcomeUnknown,
    RelayUnavailable,
    throttling_reply,
)
from shared.settings import Settings
from tests.unit.worker.fakes import email_record
from tests.unit.worker.scripted_relay import (
    TAKEN,
    Cut,
    ScriptedRelay,
    byte_by_byte,
    random_cuts,
    whole,
)

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


class ScriptedClient:
    """aiosmtplib's SMTP as SmtpConnection drives it to open a session, in memory: connect and
    EHLO go well but the step named `fails`, which raises `error`; the session it opens is
    `relay`'s, whose EHLO offered `extensions`."""

    def __init__(
        self,
        relay: ScriptedRelay | None = None,
        fails: str | None = None,
        error: BaseException | None = None,
        extensions: tuple[str, ...] = ("pipelining",),
    ) -> None:
        self.relay = relay or ScriptedRelay()
        self.fails = fails
        self.error = error or SMTPServerDisconnected("Connection lost")
        self.extensions = extensions
        self.opening: list[str] = []
        self.is_connected = False
        self.transport = self.relay
        self.protocol = self  # aiosmtplib's, told when the connection is lost
        self.relay.protocol = self

    @property
    def steps(self) -> list[str]:
        return self.opening + self.relay.steps

    def _step(self, name: str) -> None:
        self.opening.append(name)
        if name == self.fails:
            raise self.error

    async def connect(self) -> None:
        self._step("connect")
        self.is_connected = True

    async def ehlo(self) -> None:
        self._step("EHLO")

    def supports_extension(self, name: str) -> bool:
        return name in self.extensions

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_connected = False

    def close(self) -> None:
        self.is_connected = False
        self.relay.close()


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedClient]:
    """The clients SmtpConnection will open, in order: a test appends them."""
    clients: list[ScriptedClient] = []
    monkeypatch.setattr(smtp, "SMTP", lambda **options: clients.pop(0))
    return clients


@pytest.fixture(params=[True, False], ids=["pipelined", "one_at_a_time"])
def pipelining(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The extensions of a relay that offers PIPELINING, and of one that does not."""
    return ("pipelining",) if request.param else ()


WAIT = 0.05  # every reply's wait, for a relay that goes silent


def connection(timeout_seconds: float = 5) -> SmtpConnection:
    return SmtpConnection(
        SmtpServer(
            "relay.test",
            25,
            timeout_seconds=timeout_seconds,
            command_timeout_seconds=WAIT,
            data_timeout_seconds=WAIT,
            data_end_timeout_seconds=WAIT,
        )
    )


def an_email(*to: str) -> OutgoingEmail:
    return render_email(email_record("m-1", to=list(to) or ["ana@example.com"]), "pipeline.test")


ANA, BOB, CY = "ana@example.com", "bob@example.com", "cy@example.com"
NO_SUCH_USER = b"550 5.1.1 no such user\r\n"
QUEUED = SMTPResponse(250, "2.0.0 Ok: queued as 4F2A")


async def test_a_pipelined_transaction_writes_mail_every_rcpt_and_data_at_once(
    relay: list[ScriptedClient],
) -> None:
    client = ScriptedClient(extensions=("pipelining",))
    relay.append(client)
    email = an_email(ANA, BOB)

    await connection().send(email, email.recipients)

    group, message = client.relay.writes
    assert group == (
        b"MAIL FROM:<demo@example.com>\r\nRCPT TO:<ana@example.com>\r\n"
        b"RCPT TO:<bob@example.com>\r\nDATA\r\n"
    )
    assert message.endswith(b"\r\n.\r\n")


async def test_without_pipelining_each_command_waits_for_its_reply(
    relay: list[ScriptedClient],
) -> None:
    client = ScriptedClient(extensions=())
    relay.append(client)
    email = an_email(ANA, BOB)

    await connection().send(email, email.recipients)

    assert client.relay.writes[:4] == [
        b"MAIL FROM:<demo@example.com>\r\n",
        b"RCPT TO:<ana@example.com>\r\n",
        b"RCPT TO:<bob@example.com>\r\n",
        b"DATA\r\n",
    ]
    assert len(client.relay.writes) == 5, "and the message"


async def test_a_transaction_returns_the_final_reply_and_the_recipients_refused(
    relay: list[ScriptedClient], pipelining: tuple[str, ...]
) -> None:
    relay.append(ScriptedClient(ScriptedRelay({BOB: NO_SUCH_USER}), extensions=pipelining))
    email = an_email(ANA, BOB, CY)

    transaction = await connection().send(email, email.recipients)

    assert transaction.reply == QUEUED
    assert transaction.refused == {BOB: SMTPResponse(550, "5.1.1 no such user")}


MULTI_LINE = {
    "MAIL": b"250-2.1.0 Sender\r\n250 2.1.0 Ok\r\n",
    CY: b"550-5.1.1 The email account that you tried to reach does not exist.\r\n"
    b"550-5.1.1 Please try double-checking the recipient's email\r\n"
    b"550 5.1.1 address for typos.\r\n",
    "DATA": b"354-Go ahead\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
    "message": b"250-2.0.0 Ok:\r\n250 2.0.0 queued as 4F2A\r\n",
}


@pytest.mark.parametrize(
    "cut",
    [whole, byte_by_byte, *(random_cuts(seed) for seed in range(20))],
    ids=["one_segment", "byte_by_byte", *(f"random_cuts_{seed}" for seed in range(20))],
)
async def test_replies_cut_anywhere_read_the_same(relay: list[ScriptedClient], cut: Cut) -> None:
    """Several replies in one segment, one reply over several, multi-line replies: the same
    transaction, whichever way the network cuts the replies."""
    relay.append(ScriptedClient(ScriptedRelay(MULTI_LINE, cut=cut)))
    email = an_email(ANA, BOB, CY)

    transaction = await connection().send(email, email.recipients)

    assert transaction.reply == SMTPResponse(250, "2.0.0 Ok:\n2.0.0 queued as 4F2A")
    assert transaction.refused == {
        CY: SMTPResponse(
            550,
            "5.1.1 The email account that you tried to reach does not exist.\n"
            "5.1.1 Please try double-checking the recipient's email\n"
            "5.1.1 address for typos.",
        )
    }


async def test_a_reply_not_in_utf8_keeps_its_bytes_as_aiosmtplib_reads_them(
    relay: list[ScriptedClient],
) -> None:
    """Surrogate escapes, which the sent event turns into U+FFFD (shared/events.py)."""
    relay.append(ScriptedClient(ScriptedRelay({"message": b"250 Ok: queued \xff as 4F2A\r\n"})))

    transaction = await connection().send(an_email(), [ANA])

    assert transaction.reply.message == "Ok: queued \udcff as 4F2A"


@pytest.mark.parametrize(
    ("fails", "error"),
    [
        pytest.param("connect", ConnectionRefusedError(111, "Connect call failed"), id="refused"),
        pytest.param("connect", SMTPConnectTimeoutError("Timed out connecting"), id="timed_out"),
        pytest.param(
            "connect", SMTPConnectResponseError(421, "4.3.2 too busy"), id="a_4xx_greeting"
        ),
        pytest.param("EHLO", SMTPServerDisconnected("Connection lost"), id="lost_at_ehlo"),
    ],
)
async def test_a_failure_opening_the_session_is_the_relays(
    relay: list[ScriptedClient], fails: str, error: BaseException
) -> None:
    relay.append(ScriptedClient(fails=fails, error=error))

    with pytest.raises(RelayUnavailable) as unavailable:
        await connection().send(an_email(), [ANA])

    assert str(unavailable.value).startswith(f"relay.test:25: {type(error).__name__}: ")
    assert unavailable.value.__cause__ is error


@pytest.mark.parametrize(
    ("script", "cause"),
    [
        pytest.param({"lost_at": "MAIL"}, SMTPServerDisconnected, id="a_stale_connection"),
        pytest.param({"silent_at": "MAIL"}, SMTPReadTimeoutError, id="no_reply_to_mail_from"),
    ],
)
async def test_a_failure_before_mail_from_is_answered_is_the_relays(
    relay: list[ScriptedClient],
    pipelining: tuple[str, ...],
    script: dict[str, Any],
    cause: type[Exception],
) -> None:
    relay.append(ScriptedClient(ScriptedRelay(**script), extensions=pipelining))

    with pytest.raises(RelayUnavailable) as unavailable:
        await connection().send(an_email(ANA, BOB), [ANA, BOB])

    assert str(unavailable.value).startswith(f"relay.test:25: {cause.__name__}: ")
    assert isinstance(unavailable.value.__cause__, cause)


@pytest.mark.parametrize(
    ("script", "raised"),
    [
        pytest.param({"lost_at": "RCPT"}, SMTPServerDisconnected, id="lost_at_rcpt"),
        pytest.param({"silent_at": "RCPT"}, SMTPReadTimeoutError, id="no_reply_to_rcpt"),
        pytest.param({"lost_at": "DATA"}, SMTPServerDisconnected, id="lost_at_data"),
        pytest.param({"silent_at": "DATA"}, SMTPReadTimeoutError, id="no_reply_to_data"),
        pytest.param({"lost_at": "message"}, OutcomeUnknown, id="final_reply_lost"),
        pytest.param({"silent_at": "message"}, OutcomeUnknown, id="no_final_reply"),
    ],
)
async def test_a_failure_once_mail_from_was_answered_is_the_emails(
    relay: list[ScriptedClient],
    pipelining: tuple[str, ...],
    script: dict[str, Any],
    raised: type[Exception],
) -> None:
    relay.append(ScriptedClient(ScriptedRelay(**script), extensions=pipelining))

    with pytest.raises(raised) as failed:
        await connection().send(an_email(), [ANA])

    assert not isinstance(failed.value, RelayUnavailable)


async def test_the_final_dot_sent_marks_the_wait_for_its_reply(
    relay: list[ScriptedClient], pipelining: tuple[str, ...]
) -> None:
    client = ScriptedClient(ScriptedRelay(silent_at="message"), extensions=pipelining)
    relay.append(client)
    sender = connection()
    marked: list[bool] = []  # as each write reaches the relay
    client.relay.on_write = lambda: marked.append(sender.awaiting_final_reply)

    with pytest.raises(OutcomeUnknown, match="SMTP_DATA_END_TIMEOUT_SECONDS"):
        await sender.send(an_email(), [ANA])

    assert marked[-1], "the message is written once the final dot is marked as sent"
    assert not any(marked[:-1])
    assert not sender.awaiting_final_reply


@pytest.mark.parametrize("code", [421, 451, 550])
async def test_a_refusal_of_mail_from_is_the_emails_and_drops_the_connection(
    relay: list[ScriptedClient], pipelining: tuple[str, ...], code: int
) -> None:
    """A 421 too, unless it closes an idle connection: it may be about this sender."""
    refused_sender = f"{code} 4.3.0 not now\r\n".encode()
    client = ScriptedClient(ScriptedRelay({"MAIL": refused_sender}), extensions=pipelining)
    relay.append(client)
    sender = connection()

    with pytest.raises(SMTPSenderRefused) as refused:
        await sender.send(an_email(), [ANA])

    assert refused.value.code == code
    assert not sender.is_open
    assert "message" not in client.relay.steps


async def test_a_421_to_mail_from_closing_an_idle_connection_is_the_relays(
    relay: list[ScriptedClient], pipelining: tuple[str, ...]
) -> None:
    """The relay timed out a pooled connection as MAIL FROM went: no email was named to it, and
    nothing asks for a slower pace (a 421 that does stays the email's: a 421 to a recipient,
    below, and a refusal of MAIL FROM, above)."""
    idle = b"421 4.4.2 relay.test Error: timeout exceeded\r\n"
    client = ScriptedClient(ScriptedRelay({"MAIL": idle}), extensions=pipelining)
    relay.append(client)
    sender = connection()

    with pytest.raises(RelayUnavailable) as unavailable:
        await sender.send(an_email(), [ANA])

    cause = unavailable.value.__cause__
    assert isinstance(cause, SMTPResponseException)
    assert cause.code == 421
    assert throttling_reply(unavailable.value) is None
    assert not sender.is_open
    assert "message" not in client.relay.steps


async def test_a_421_to_a_recipient_refuses_the_whole_transaction(
    relay: list[ScriptedClient], pipelining: tuple[str, ...]
) -> None:
    """The relay closes the connection: no recipient is at fault, and the relay asks the worker
    to slow down (relay_etiquette.py reads the code)."""
    slow_down = b"421 4.7.0 rate limit exceeded, slow down\r\n"
    relay.append(ScriptedClient(ScriptedRelay({BOB: slow_down}), extensions=pipelining))
    sender = connection()

    with pytest.raises(SMTPResponseException) as refused:
        await sender.send(an_email(ANA, BOB, CY), [ANA, BOB, CY])

    assert type(refused.value) is SMTPResponseException
    assert refused.value.code == 421
    assert throttling_reply(refused.value) == "421 4.7.0 rate limit exceeded, slow down"
    assert not sender.is_open


async def test_an_unreadable_reply_to_the_final_dot_is_an_unknown_outcome(
    relay: list[ScriptedClient], pipelining: tuple[str, ...]
) -> None:
    """The server may have stored the email and said so in a reply that cannot be read."""
    garbled = b"2S0 2.0.0 Ok: queued as 4F2A\r\n"
    relay.append(ScriptedClient(ScriptedRelay({"message": garbled}), extensions=pipelining))
    sender = connection()

    with pytest.raises(OutcomeUnknown, match="could not be read"):
        await sender.send(an_email(), [ANA])

    assert not sender.is_open


@pytest.mark.parametrize(
    "data_reply",
    [
        pytest.param(None, id="data_refused_503"),
        pytest.param(TAKEN["DATA"], id="data_answered_354"),
    ],
)
async def test_every_recipient_refused_resets_the_transaction_and_keeps_the_connection(
    relay: list[ScriptedClient],
    pipelining: tuple[str, ...],
    data_reply: bytes | None,
) -> None:
    """RFC 2920 3.1: pipelined, DATA's reply is read, and a 354 gets a lone "." (no message);
    then RSET, and the next email goes over the same connection."""
    answers = {ANA: NO_SUCH_USER, BOB: b"450 4.2.0 mailbox busy\r\n"}
    if data_reply is not None:
        answers["DATA"] = data_reply
    client = ScriptedClient(ScriptedRelay(answers), extensions=pipelining)
    relay.append(client)  # the only connection: opening another would fail the test
    sender = connection()

    with pytest.raises(SMTPRecipientsRefused) as refused:
        await sender.send(an_email(ANA, BOB), [ANA, BOB])
    assert sender.is_open
    await sender.send(an_email(CY), [CY])

    assert [r.code for r in refused.value.recipients] == [550, 450]
    assert [r.recipient for r in refused.value.recipients] == [ANA, BOB]
    lone_dot = bool(pipelining) and data_reply is not None
    refused_steps = ["MAIL", "RCPT", "RCPT"] + (["DATA"] if pipelining else [])
    assert client.steps == [
        "connect", "EHLO", *refused_steps, *(["message"] if lone_dot else []), "RSET",
        "MAIL", "RCPT", "DATA", "message",
    ]  # fmt: skip
    assert client.relay.writes.count(b".\r\n") == lone_dot
    assert sum(b"\r\n.\r\n" in write for write in client.relay.writes) == 1, "one message"


TOO_MANY_ERRORS = b"421 4.7.0 relay.test Error: too many errors\r\n"


@pytest.mark.parametrize(
    "script",
    [
        pytest.param({"answers": {ANA: NO_SUCH_USER, "RSET": b"500 unknown\r\n"}}, id="refused"),
        pytest.param({"answers": {ANA: NO_SUCH_USER, "RSET": TOO_MANY_ERRORS}}, id="closing"),
        pytest.param({"answers": {ANA: NO_SUCH_USER}, "lost_at": "RSET"}, id="lost"),
        pytest.param({"answers": {ANA: NO_SUCH_USER}, "silent_at": "RSET"}, id="no_reply"),
    ],
)
async def test_a_reset_that_fails_drops_the_connection_and_the_refusals_stand(
    relay: list[ScriptedClient], pipelining: tuple[str, ...], script: dict[str, Any]
) -> None:
    """A reset is waited for as a greeting is (SMTP_TIMEOUT_SECONDS), not as a transaction's
    replies: the refusals are known already."""
    failing = ScriptedClient(ScriptedRelay(**script), extensions=pipelining)
    fresh = ScriptedClient()
    relay.extend([failing, fresh])
    sender = SmtpConnection(
        SmtpServer("relay.test", 25, timeout_seconds=WAIT, command_timeout_seconds=60)
    )

    async with asyncio.timeout(5):
        with pytest.raises(SMTPRecipientsRefused) as refused:
            await sender.send(an_email(ANA), [ANA])
    assert not sender.is_open
    await sender.send(an_email(), [BOB])

    assert [r.code for r in refused.value.recipients] == [550]
    assert failing.relay.is_closing()
    assert fresh.steps[-1] == "message"


async def test_a_stop_during_the_reset_drops_the_connection(
    relay: list[ScriptedClient], pipelining: tuple[str, ...]
) -> None:
    client = ScriptedClient(
        ScriptedRelay({ANA: NO_SUCH_USER}, silent_at="RSET"), extensions=pipelining
    )
    relay.append(client)
    reset_sent = asyncio.Event()

    def on_write() -> None:
        if client.relay.writes[-1] == b"RSET\r\n":
            reset_sent.set()

    client.relay.on_write = on_write
    sender = connection()
    sending = asyncio.create_task(sender.send(an_email(ANA), [ANA]))
    await reset_sent.wait()

    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending

    assert not sender.is_open
    assert client.relay.is_closing()


async def test_a_connection_refused_many_recipients_since_its_last_email_starts_afresh(
    relay: list[ScriptedClient],
) -> None:
    """Postfix slows every reply from 10 refusals without a delivery: the connection is reset
    while it has had fewer than REFUSALS_BEFORE_A_FRESH_CONNECTION, and an email taken starts
    the count again; at the limit it is dropped, and the next email opens another."""
    first = ScriptedClient(ScriptedRelay({ANA: NO_SUCH_USER}))
    second = ScriptedClient()
    relay.extend([first, second])
    sender = connection()
    below_the_limit = smtp.REFUSALS_BEFORE_A_FRESH_CONNECTION - 1

    for _ in range(below_the_limit):
        with pytest.raises(SMTPRecipientsRefused):
            await sender.send(an_email(ANA), [ANA])
    await sender.send(an_email(BOB), [BOB])  # taken: the count starts again
    for _ in range(below_the_limit):
        with pytest.raises(SMTPRecipientsRefused):
            await sender.send(an_email(ANA), [ANA])
    assert sender.is_open
    assert first.relay.steps.count("RSET") == 2 * below_the_limit

    with pytest.raises(SMTPRecipientsRefused):
        await sender.send(an_email(ANA), [ANA])
    assert not sender.is_open
    assert first.relay.steps.count("RSET") == 2 * below_the_limit
    await sender.send(an_email(BOB), [BOB])
    assert second.steps[-1] == "message"


async def test_data_not_answered_354_is_a_data_error(
    relay: list[ScriptedClient], pipelining: tuple[str, ...]
) -> None:
    answers = {"DATA": b"554 5.5.1 no valid recipients\r\n"}
    relay.append(ScriptedClient(ScriptedRelay(answers), extensions=pipelining))

    with pytest.raises(SMTPDataError) as refused:
        await connection().send(an_email(), [ANA])

    assert refused.value.code == 554


async def test_a_mailbox_beyond_ascii_goes_with_smtputf8_on_mail(
    relay: list[ScriptedClient],
) -> None:
    client = ScriptedClient(extensions=("pipelining", "smtputf8"))
    relay.append(client)
    email = an_email("José <josé@example.com>")

    await connection().send(email, email.recipients)

    assert client.relay.writes[0] == (
        b"MAIL FROM:<demo@example.com> SMTPUTF8 BODY=8BITMIME\r\n"
        + "RCPT TO:<josé@example.com>\r\nDATA\r\n".encode()
    )


async def test_a_relay_without_smtputf8_is_the_emails_trouble_not_the_relays(
    relay: list[ScriptedClient],
) -> None:
    relay.append(ScriptedClient())
    email = an_email("José <josé@example.com>")

    with pytest.raises(SMTPNotSupported):
        await connection().send(email, email.recipients)


async def test_a_session_refused_before_any_email_is_a_configuration_fault_not_the_relays(
    relay: list[ScriptedClient],
) -> None:
    relay.append(ScriptedClient(fails="connect", error=SMTPConnectResponseError(554, "no")))

    with pytest.raises(ConfigurationFault) as refused:
        await connection().send(an_email(), [ANA])

    assert refused.value.kind == "session_refused"


async def test_the_send_limiters_turn_comes_right_before_mail_from(
    relay: list[ScriptedClient],
) -> None:
    client = ScriptedClient()
    relay.append(client)
    seen_at_turn: list[list[str]] = []

    class Limiter(SendLimiter):
        async def turn(self) -> None:
            seen_at_turn.append(list(client.steps))

    sender = SmtpConnection(SmtpServer("relay.test", 25, timeout_seconds=5), Limiter(None))
    await sender.send(an_email(), [ANA])
    await sender.send(an_email(), [ANA])

    assert seen_at_turn == [
        ["connect", "EHLO"],
        ["connect", "EHLO", "MAIL", "RCPT", "DATA", "message"],
    ]


async def test_a_stale_connection_is_dropped_and_the_next_send_opens_a_fresh_one(
    relay: list[ScriptedClient], pipelining: tuple[str, ...]
) -> None:
    stale = ScriptedClient(ScriptedRelay(lost_at="MAIL"), extensions=pipelining)
    fresh = ScriptedClient(extensions=pipelining)
    relay.extend([stale, fresh])
    pooled = connection()

    with pytest.raises(RelayUnavailable):
        await pooled.send(an_email(), [ANA])
    await pooled.send(an_email(), [ANA])

    assert stale.steps == ["connect", "EHLO", "MAIL"]
    assert fresh.steps == ["connect", "EHLO", "MAIL", "RCPT", "DATA", "message"]
    assert relay == [], "opened once each"


async def test_a_connection_lost_while_idle_is_opened_afresh(relay: list[ScriptedClient]) -> None:
    first, second = ScriptedClient(), ScriptedClient()
    relay.extend([first, second])
    pooled = connection()
    await pooled.send(an_email(), [ANA])

    first.relay.close()  # the relay hangs up an idle connection
    await asyncio.sleep(0)
    await pooled.send(an_email(), [ANA])

    assert not first.is_connected, "aiosmtplib's client is told"
    assert second.steps[-1] == "message"


async def test_close_says_quit_and_closes(relay: list[ScriptedClient]) -> None:
    client = ScriptedClient()
    relay.append(client)
    pooled = connection()
    await pooled.send(an_email(), [ANA])

    await pooled.close()

    assert client.relay.steps[-1] == "QUIT"
    assert client.relay.is_closing()
    assert not pooled.is_open
