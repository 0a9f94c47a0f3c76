"""The rules of the Idempotency-Key header: which keys are valid, when two bodies are the same
request, and what a request whose key was seen before gets."""

from __future__ import annotations

import hashlib
import re

import pytest

from services.api.idempotency import (
    KEY_PATTERN,
    Claim,
    InFlight,
    InvalidKey,
    KeyPolicy,
    KeyRow,
    KeyState,
    Mismatch,
    Replay,
    TakeOver,
    decide,
    fingerprint,
    parse_key,
)
from shared.schema import EmailContent

VALID_KEYS = [
    ("order-42", "order-42"),
    ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ('"order-42"', "order-42"),  # the draft's form, an RFC 8941 sf-string: the same key
    ('"order 42"', "order 42"),  # spaces only inside quotes
    ('"say \\"hi\\""', 'say "hi"'),
    ('"back\\\\slash"', "back\\slash"),
    ('"half', '"half'),  # not quoted at both ends: the characters as sent
    ("x" * 256, "x" * 256),
    ('"' + "x" * 256 + '"', "x" * 256),
]


@pytest.mark.parametrize(("header", "key"), VALID_KEYS)
def test_a_key_is_printable_ascii_or_a_quoted_string(header: str, key: str) -> None:
    assert parse_key(header) == key
    assert re.fullmatch(KEY_PATTERN, header), "the OpenAPI's pattern takes it too"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "is empty"),
        ('""', "is empty"),
        ("x" * 257, "has 257 characters, at most 256"),
        ('"' + "x" * 257 + '"', "has 257 characters, at most 256"),
        ("order 42", "holds a space"),
        ("commande-é", "holds 'é', which is not printable ASCII"),
        ("tab\there", "holds '\\t', which is not printable ASCII"),
        ('"a\\nb"', "with the escape \\n: only"),
        ('"a"b"', 'a " inside that is not escaped'),
        ('"ends\\"', "ends in a lone \\"),
    ],
)
def test_an_invalid_key_says_what_is_wrong_and_what_to_send(header: str, reason: str) -> None:
    with pytest.raises(InvalidKey) as refused:
        parse_key(header)

    assert reason in str(refused.value)
    assert "1 to 256 printable ASCII characters (a UUID is best)" in str(refused.value)


@pytest.mark.parametrize("header", ["", "x" * 257, "order 42", "commande-é", "tab\there"])
def test_the_openapi_pattern_refuses_what_the_api_refuses_for_its_characters(
    header: str,
) -> None:
    assert not re.fullmatch(KEY_PATTERN, header)


def canonical(text: str) -> object:
    return EmailContent.model_validate_json(text).model_dump(mode="json", by_alias=True)


def test_the_fingerprint_ignores_key_order_spacing_escapes_and_defaults() -> None:
    sent = '{"from": "a@example.com", "to": ["b@example.com"], "subject": "Café", "text": "t"}'
    reordered = (
        '{ "text":"t","subject":"Caf\\u00e9" ,"cc":[],"to":[" b@example.com"],'
        '"from":"a@example.com","tags":[] }'
    )

    assert fingerprint("POST /emails", canonical(sent)) == fingerprint(
        "POST /emails", canonical(reordered)
    )


def test_the_fingerprint_tells_bodies_and_routes_apart() -> None:
    body = {"from": "a@example.com", "to": ["b@example.com"], "subject": "s", "text": "t"}
    other = {**body, "subject": "S"}

    assert fingerprint("POST /emails", body) != fingerprint("POST /emails", other)
    assert fingerprint("POST /emails", [body]) != fingerprint("POST /emails/batch", [body])


def test_the_fingerprint_is_sha256_of_the_canonical_json() -> None:
    """Message ids derive from it: changing it makes a retry across an upgrade a new email."""
    canonical_json = b'["POST /emails",{"a":"\\u00e9","b":1}]'

    assert (
        fingerprint("POST /emails", {"b": 1, "a": "é"})
        == hashlib.sha256(canonical_json).hexdigest()
    )


POLICY = KeyPolicy(keep_seconds=24 * 3600, in_flight_seconds=10)
NOW = 1_000_000.0


def row(
    state: KeyState,
    fingerprint: str = "fp",
    age: float = 1.0,
    claimed_ago: float = 1.0,
) -> KeyRow:
    status, body = (202, b'{"id":"m-1"}') if state == "done" else (None, None)
    return KeyRow("k", fingerprint, state, "c", NOW - age, NOW - claimed_ago, status, body)


@pytest.mark.parametrize(
    ("found", "decision"),
    [
        (None, Claim()),
        (row("done"), Replay(202, b'{"id":"m-1"}')),
        (row("done", fingerprint="other"), Mismatch()),
        (row("in_flight", fingerprint="other"), Mismatch()),
        (row("interrupted", fingerprint="other"), Mismatch()),
        (row("in_flight"), InFlight(retry_after_seconds=1)),
        (row("in_flight", claimed_ago=9.9), InFlight(retry_after_seconds=1)),
        # Twice the longest wait for Kafka: the API process that claimed it died.
        (row("in_flight", age=60, claimed_ago=10), TakeOver(restart_window=False)),
        # Kafka did not acknowledge (503): the same body goes again, with the same ids.
        (row("interrupted"), TakeOver(restart_window=False)),
        # The window is over: a new key, whatever the body.
        (row("done", age=24 * 3600), TakeOver(restart_window=True)),
        (row("done", fingerprint="other", age=24 * 3600), TakeOver(restart_window=True)),
        (row("in_flight", age=25 * 3600, claimed_ago=0), TakeOver(restart_window=True)),
    ],
)
def test_what_a_request_gets_for_a_key_seen_before(found: KeyRow | None, decision: object) -> None:
    assert decide(found, "fp", NOW, POLICY) == decision
