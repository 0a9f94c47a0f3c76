"""What the sink offers, decided from the settings alone; contradictions are one line each."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.smtp_sink.auth import FileAuthenticator
from services.smtp_sink.security import (
    SecurityError,
    SecurityPlan,
    SmtpSecurity,
    TlsMode,
    plan_security,
)
from shared.settings import Settings

CERT, KEY, AUTH = Path("/tls/sink.pem"), Path("/tls/sink-key.pem"), Path("/sink/auth")


def settings(
    cert: Path | None = None,
    key: Path | None = None,
    require_starttls: bool = False,
    implicit: bool = False,
    auth: Path | None = None,
) -> Settings:
    return Settings(
        _env_file=None,
        sink_tls_cert_file=cert,
        sink_tls_key_file=key,
        sink_require_starttls=require_starttls,
        sink_tls_implicit=implicit,
        sink_auth_file=auth,
    )


@pytest.mark.parametrize(
    ("given", "tls", "auth_require_tls"),
    [
        (settings(), "none", True),
        (settings(auth=AUTH), "none", False),
        (settings(CERT, KEY), "starttls", True),
        (settings(CERT, KEY, require_starttls=True, auth=AUTH), "starttls", True),
        (settings(CERT, KEY, implicit=True), "implicit", True),
        (settings(CERT, KEY, implicit=True, auth=AUTH), "implicit", False),
    ],
)
def test_the_settings_choose_the_tls_and_when_auth_waits_for_it(
    given: Settings, tls: TlsMode, auth_require_tls: bool
) -> None:
    plan = plan_security(given)

    assert plan.tls == tls
    assert plan.auth_require_tls == auth_require_tls


@pytest.mark.parametrize(
    ("given", "line"),
    [
        (
            settings(cert=CERT),
            f"SINK_TLS_CERT_FILE={CERT} needs SINK_TLS_KEY_FILE, its private key",
        ),
        (settings(key=KEY), f"SINK_TLS_KEY_FILE={KEY} needs SINK_TLS_CERT_FILE, its certificate"),
        (
            settings(require_starttls=True),
            "SINK_REQUIRE_STARTTLS=true needs SINK_TLS_CERT_FILE and SINK_TLS_KEY_FILE",
        ),
        (
            settings(implicit=True),
            "SINK_TLS_IMPLICIT=true needs SINK_TLS_CERT_FILE and SINK_TLS_KEY_FILE",
        ),
        (
            settings(CERT, KEY, require_starttls=True, implicit=True),
            "SINK_REQUIRE_STARTTLS=true and SINK_TLS_IMPLICIT=true contradict each other: "
            "with implicit TLS every connection is TLS from the start, there is no STARTTLS",
        ),
    ],
)
def test_contradicting_settings_are_one_line_naming_them(given: Settings, line: str) -> None:
    with pytest.raises(SecurityError) as error:
        plan_security(given)

    assert str(error.value) == line


def offers(tls: TlsMode, require_starttls: bool = False, users: int = 0) -> list[str]:
    plan = SecurityPlan(tls, require_starttls, CERT, KEY, AUTH if users else None)
    authenticator = (
        FileAuthenticator({f"user{n}".encode(): b"pw" for n in range(users)}) if users else None
    )
    return SmtpSecurity(plan, None, authenticator).offers()


def test_the_start_lines_say_what_clients_can_and_must_do() -> None:
    assert offers("none") == []
    assert offers("starttls") == [f"STARTTLS offered (optional), certificate {CERT}"]
    assert offers("starttls", require_starttls=True, users=1) == [
        f"STARTTLS offered (required), certificate {CERT}",
        "AUTH required (PLAIN, LOGIN; 1 user), after STARTTLS only",
    ]
    assert offers("implicit", users=2) == [
        f"implicit TLS on every connection, certificate {CERT}",
        "AUTH required (PLAIN, LOGIN; 2 users), over TLS",
    ]
    assert offers("none", users=3) == [
        "AUTH required (PLAIN, LOGIN; 3 users), over plaintext: no TLS is configured"
    ]
