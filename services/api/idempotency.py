"""The rules of the `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header): what a
key may be, when two requests are the same, and what a request whose key was seen before gets.
Pure: the store (idempotency_store/) and idempotent_requests.py do the I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from shared.schema import EmailContent

HEADER: Final = "Idempotency-Key"
MAX_KEY_LENGTH: Final = 256  # Resend's and useSend's bound
# What the OpenAPI says a key is: 1-256 printable ASCII characters without spaces, or the
# draft's form, an RFC 8941 sf-string: in double quotes, spaces allowed, \" and \\ escaped.
KEY_PATTERN: Final = r'^(?:[!-~]{1,256}|"(?:[ !#-\[\]-~]|\\["\\]){1,256}")$'
# How soon a request that found its key's first request still in flight may try again: the
# first one waits for Kafka's acknowledgement, a few milliseconds.
IN_FLIGHT_RETRY_AFTER_SECONDS: Final = 1
KEY_ADVICE: Final = (
    "send 1 to 256 printable ASCII characters (a UUID is best), or an RFC 8941 string in "
    'double quotes ("order-42")'
)

# What a fingerprint names besides the body: a key sent to both routes is two requests.
SEND_ROUTE: Final = "POST /emails"
BATCH_ROUTE: Final = "POST /emails/batch"

KeyState = Literal["in_flight", "done", "interrupted"]


class InvalidKey(ValueError):
    """The header's value is no key; the message says what is wrong and what to send."""


def parse_key(value: str) -> str:
    """The key in an Idempotency-Key header: as sent (`order-42`), or unquoted from the draft's
    sf-string (`"order-42"`, the same key); InvalidKey if it is neither."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        key = _unquoted(value[1:-1])
    else:
        _check_characters(value, allowed=lambda char: "!" <= char <= "~")
        key = value
    if not key:
        raise InvalidKey(f"is empty: {KEY_ADVICE}")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"has {len(key)} characters, at most {MAX_KEY_LENGTH}: {KEY_ADVICE}")
    return key


def _unquoted(content: str) -> str:
    """An sf-string's content (RFC 8941, 3.3.3): printable ASCII, with \\" and \\\\ escaped."""
    _check_characters(content, allowed=lambda char: " " <= char <= "~")
    key: list[str] = []
    escaped = False
    for char in content:
        if escaped:
            if char not in '"\\':
                raise InvalidKey(
                    f'is a quoted string with the escape \\{char}: only \\" and \\\\ '
                    f"are allowed (RFC 8941, 3.3.3); {KEY_ADVICE}"
                )
            key.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            raise InvalidKey(
                f'is a quoted string with a " inside that is not escaped as \\": {KEY_ADVICE}'
            )
        else:
            key.append(char)
    if escaped:
        raise InvalidKey(f"is a quoted string that ends in a lone \\: {KEY_ADVICE}")
    return "".join(key)


def _check_characters(value: str, allowed: Callable[[str], bool]) -> None:
    for char in value:
        if not allowed(char):
            what = "a space" if char == " " else f"{char!r}, which is not printable ASCII"
            raise InvalidKey(f"holds {what}: {KEY_ADVICE}")


def fingerprint(route: str, body: object) -> str:
    """The request as the key binds it: sha256 of the route and the *validated* body as
    canonical JSON (keys sorted, no spaces, every non-ASCII character escaped), so that key
    order, spacing, escapes and the fields left at their defaults make no difference."""
    canonical = json.dumps([route, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def email_fingerprint(email: EmailContent) -> str:
    """The fingerprint of `POST /emails` with this email: with the key, its message id
    (shared.schema.message_id_for)."""
    return fingerprint(SEND_ROUTE, email.model_dump(mode="json", by_alias=True))


@dataclass(frozen=True)
class KeyRow:
    """What the store keeps of one key."""

    key: str
    fingerprint: str
    state: KeyState  # interrupted: Kafka did not acknowledge (503); the same body may go again
    claim: str  # who holds it: a token of the request that claimed it last
    created_at: float  # its first claim, seconds since the epoch: the window starts here
    claimed_at: float  # its last claim
    status: int | None = None  # the answer, once done
    body: bytes | None = None


@dataclass(frozen=True)
class KeyPolicy:
    keep_seconds: float  # API_IDEMPOTENCY_KEY_HOURS
    # A claim in flight for longer belongs to an API process that died: twice the longest a
    # request waits for Kafka (API_PRODUCE_TIMEOUT_SECONDS).
    in_flight_seconds: float


@dataclass(frozen=True)
class Claim:
    """No row: claim the key (an insert that only one of several racing requests wins)."""


@dataclass(frozen=True)
class Replay:
    """The first request finished: its answer again, byte for byte."""

    status: int
    body: bytes


@dataclass(frozen=True)
class Mismatch:
    """The key was used with a different body: 422."""


@dataclass(frozen=True)
class InFlight:
    """The first request with this key is still being answered: 409."""

    retry_after_seconds: int = IN_FLIGHT_RETRY_AFTER_SECONDS


@dataclass(frozen=True)
class TakeOver:
    """Claim the row over: its key has expired (a new window, and perhaps a new body), its
    first request ended in a 503, or the API process that claimed it died."""

    restart_window: bool


Decision = Claim | Replay | Mismatch | InFlight | TakeOver


def decide(row: KeyRow | None, fingerprint: str, now: float, policy: KeyPolicy) -> Decision:
    """What a request with this key and body gets, given the key's row (None: no row)."""
    if row is None:
        return Claim()
    if now - row.created_at >= policy.keep_seconds:
        return TakeOver(restart_window=True)
    if row.fingerprint != fingerprint:
        return Mismatch()
    if row.state == "done" and row.status is not None and row.body is not None:
        return Replay(row.status, row.body)
    if row.state == "in_flight" and now - row.claimed_at < policy.in_flight_seconds:
        return InFlight()
    return TakeOver(restart_window=False)
