"""What the sink offers, decided from the settings alone; contradictions are one line each, and
so is the warning for an auth file other users may read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services.smtp_sink.smtp.auth import FileAuthenticator
from services.smtp_sink.smtp.security import (
    SecurityError,
    SecurityPlan,
    SmtpSecurity,
    TlsMode,
    auth_file_exposure,
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


@pytest.mark.parametrize(
    ("mode", "open_to"),
    [
        (0o644, "its group and other users"),
        (0o640, "its group"),
        (0o620, "its group"),  # writable: anyone in it could add a user
        (0o604, "other users"),
        (0o666, "its group and other users"),
    ],
)
def test_an_auth_file_others_may_use_is_one_warning_with_its_mode_and_the_fix(
    mode: int, open_to: str
) -> None:
    security = SmtpSecurity(
        SecurityPlan("none", False, None, None, AUTH),
        None,
        FileAuthenticator({b"ann": b"pw"}),
        auth_file_mode=stat.S_IFREG | mode,
    )

    assert security.warnings() == [
        f"SINK_AUTH_FILE=/sink/auth holds the sink's passwords, but its mode {mode:04o} opens "
        f"it to {open_to}: run chmod 600 /sink/auth"
    ]


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_an_auth_file_only_its_owner_may_use_is_no_warning(mode: int) -> None:
    assert auth_file_exposure(AUTH, stat.S_IFREG | mode) is None
    assert SmtpSecurity(SecurityPlan("none", False, None, None, None), None, None).warnings() == []
