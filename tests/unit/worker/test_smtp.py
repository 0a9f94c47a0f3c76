"""The SMTP settings checked at start: credentials never go out unencrypted unless a setting says
so, both or neither of username and password, a CA file that loads; the password never shows."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from pydantic import SecretStr

from services.worker.smtp import SmtpConnection, SmtpSettingsError, smtp_server
from shared.settings import Settings

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
