"""The sink's auth file and authenticator: what a line may say, who gets in, and how many
failed tries a connection gets."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from services.smtp_sink.smtp.auth import (
    MAX_FAILED_ATTEMPTS,
    TOO_MANY_FAILURES_REPLY,
    AttemptLimit,
    AuthFileError,
    FileAuthenticator,
    parse_auth_file,
)


def test_lines_are_username_colon_password_and_the_password_may_hold_colons() -> None:
    users = parse_auth_file("# the worker\n\npipeline:s3cret:x y\nother:pw\n")

    assert users == {b"pipeline": b"s3cret:x y", b"other": b"pw"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ann:pw\nno-colon\n", "line 2 is not username:password"),
        (":pw\n", "line 1 is not username:password"),
        ("ann:\n", "line 1 is not username:password"),
        (" ann:pw\n", "line 1: the username has spaces around it"),
        ("ann:pw\nann:other\n", "line 2: user 'ann' is already on an earlier line"),
        ("# nobody\n\n", "it names no user"),
    ],
)
def test_a_malformed_file_says_which_line_and_never_the_password(text: str, reason: str) -> None:
    with pytest.raises(AuthFileError) as error:
        parse_auth_file(text)

    assert str(error.value) == reason


def authenticate(
    authenticator: FileAuthenticator, mechanism: str, login: bytes, password: bytes
) -> bool:
    server = SMTP(handler=object(), loop=asyncio.new_event_loop())
    session = Session(server.loop)
    session.peer = "127.0.0.1"
    result = authenticator(server, session, Envelope(), mechanism, LoginPassword(login, password))
    server.loop.close()
    return result.success


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_the_right_password_gets_in_by_plain_and_login(mechanism: str) -> None:
    authenticator = FileAuthenticator({b"ann": b"pw", b"bob": b"longer password"})

    assert authenticate(authenticator, mechanism, b"ann", b"pw")
    assert authenticate(authenticator, mechanism, b"bob", b"longer password")


@pytest.mark.parametrize(
    ("mechanism", "login", "password"),
    [
        ("PLAIN", b"ann", b"wrong"),
        ("PLAIN", b"ann", b"pw "),
        ("PLAIN", b"ann", b""),
        ("PLAIN", b"bob", b"pw"),  # another user's password
        ("PLAIN", b"nobody", b"\0\0"),  # the stand-in an unknown user is compared against
        ("CRAM-MD5", b"ann", b"pw"),  # not a mechanism the file can answer
    ],
)
def test_anything_else_is_refused(mechanism: str, login: bytes, password: bytes) -> None:
    authenticator = FileAuthenticator({b"ann": b"pw", b"bob": b"other"})

    assert not authenticate(authenticator, mechanism, login, password)


def test_it_counts_its_users() -> None:
    assert FileAuthenticator({b"ann": b"pw", b"bob": b"other"}).user_count == 2


def attempt(limit: AttemptLimit, password: bytes) -> AuthResult:
    server = SMTP(handler=object(), loop=asyncio.new_event_loop())
    session = Session(server.loop)
    session.peer = "127.0.0.1"
    result = limit(server, session, Envelope(), "PLAIN", LoginPassword(b"ann", password))
    server.loop.close()
    return result


def test_the_last_of_the_failed_attempts_a_connection_may_make_is_421() -> None:
    limit = AttemptLimit(FileAuthenticator({b"ann": b"pw"}))

    results = [attempt(limit, b"wrong") for _ in range(MAX_FAILED_ATTEMPTS)]

    assert [result.success for result in results] == [False] * MAX_FAILED_ATTEMPTS
    assert [result.message for result in results] == [None, None, TOO_MANY_FAILURES_REPLY]
    assert TOO_MANY_FAILURES_REPLY == "421 4.7.0 Too many failed authentication attempts"
    assert limit.exhausted


def test_the_right_password_within_the_attempts_gets_in_and_is_no_failure() -> None:
    limit = AttemptLimit(FileAuthenticator({b"ann": b"pw"}))

    attempt(limit, b"wrong")
    attempt(limit, b"wrong again")
    result = attempt(limit, b"pw")

    assert result.success
    assert (limit.failures, limit.exhausted) == (2, False)
