"""The sink's AUTH: the users of an auth file ("username:password" lines, as Mailpit's
--smtp-auth-file), the aiosmtpd authenticator that checks PLAIN and LOGIN against them, and the
limit on failed attempts per connection."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# Written out: its log lines keep this name wherever the module is (readers and tests look for it).
log = logging.getLogger("services.smtp_sink.auth")

MECHANISMS = ("PLAIN", "LOGIN")  # aiosmtpd's own; both carry the password as it is
# A password guesser gets this many tries per connection, as Postfix's smtpd caps the errors of
# one session; the last failed try is answered with this reply, and the connection is closed.
MAX_FAILED_ATTEMPTS = 3
TOO_MANY_FAILURES_REPLY = "421 4.7.0 Too many failed authentication attempts"

# aiosmtpd's `authenticator`: (server, session, envelope, mechanism, auth_data) -> AuthResult.
Authenticator = Callable[[SMTP, Session, Envelope, str, Any], AuthResult]


class AuthFileError(ValueError):
    """The auth file cannot be used; the message says where, never what the password is."""


def parse_auth_file(text: str) -> dict[bytes, bytes]:
    """username -> password, from "username:password" lines; blank lines and # comments skipped.

    The first colon ends the username, so a password may hold colons. Passwords are compared
    as written: unlike Mailpit, no hashes.
    """
    users: dict[bytes, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        username, colon, password = line.partition(":")
        if not colon or not username or not password:
            raise AuthFileError(f"line {number} is not username:password")
        if username.strip() != username:
            raise AuthFileError(f"line {number}: the username has spaces around it")
        login = username.encode()
        if login in users:
            raise AuthFileError(f"line {number}: user {username!r} is already on an earlier line")
        users[login] = password.encode()
    if not users:
        raise AuthFileError("it names no user")
    return users


class FileAuthenticator:
    """aiosmtpd's `authenticator`: a wrong user or password is 535 5.7.8, as aiosmtpd says it."""

    def __init__(self, users: Mapping[bytes, bytes]) -> None:
        self._users = dict(users)
        # An unknown user costs the same comparison as a known one: the time to answer
        # does not say which users exist.
        self._nobody = b"\0" * max(len(password) for password in self._users.values())

    @property
    def user_count(self) -> int:
        return len(self._users)

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if mechanism not in MECHANISMS or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        expected = self._users.get(auth_data.login)
        matches = hmac.compare_digest(
            auth_data.password, self._nobody if expected is None else expected
        )
        if matches and expected is not None:
            return AuthResult(success=True, auth_data=auth_data.login.decode(errors="replace"))
        log.warning(
            "AUTH %s refused for %r from %s",
            mechanism,
            auth_data.login.decode(errors="replace"),
            peer_host(session),
        )
        return AuthResult(success=False, handled=False)


class AttemptLimit:
    """One connection's authenticator: the sink's, until MAX_FAILED_ATTEMPTS of its tries have
    failed; the last failure is answered with TOO_MANY_FAILURES_REPLY, and `exhausted` tells
    the session to close the connection."""

    def __init__(
        self, authenticator: Authenticator, max_failures: int = MAX_FAILED_ATTEMPTS
    ) -> None:
        self._authenticator = authenticator
        self._max_failures = max_failures
        self.failures = 0

    @property
    def exhausted(self) -> bool:
        return self.failures >= self._max_failures

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        result = self._authenticator(server, session, envelope, mechanism, auth_data)
        if result.success:
            return result
        self.failures += 1
        if self.exhausted and not result.handled:
            return AuthResult(success=False, handled=False, message=TOO_MANY_FAILURES_REPLY)
        return result


def peer_host(session: Session) -> str:
    """The client's address, as the sink's log lines name it."""
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
