"""Fault injection: which recipients and which messages the sink refuses, and with what reply.

Pure decisions: the caller hands in the recipient or a random draw in [0, 1) and sends the reply.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

TRANSIENT_RECIPIENT_REPLY = (
    "451 4.3.0 Injected transient failure for this recipient, try again later"
)
PERMANENT_RECIPIENT_REPLY = "550 5.1.1 Injected permanent failure: no such recipient"
TRANSIENT_MESSAGE_REPLY = "451 4.3.0 Injected transient failure for this message, try again later"
PERMANENT_MESSAGE_REPLY = "550 5.7.1 Injected permanent failure: this message is refused"


@dataclass(frozen=True)
class FaultPolicy:
    transient_recipients: frozenset[str]  # lower-cased
    permanent_recipients: frozenset[str]  # lower-cased
    transient_rate: float
    permanent_rate: float

    @classmethod
    def of(
        cls,
        transient_recipients: Iterable[str] = (),
        permanent_recipients: Iterable[str] = (),
        transient_rate: float = 0.0,
        permanent_rate: float = 0.0,
    ) -> FaultPolicy:
        return cls(
            frozenset(address.lower() for address in transient_recipients),
            frozenset(address.lower() for address in permanent_recipients),
            transient_rate,
            permanent_rate,
        )


def recipient_refusal(policy: FaultPolicy, address: str) -> str | None:
    """The reply refusing RCPT TO:<address>, or None to accept it. A permanent listing wins."""
    recipient = address.lower()
    if recipient in policy.permanent_recipients:
        return PERMANENT_RECIPIENT_REPLY
    if recipient in policy.transient_recipients:
        return TRANSIENT_RECIPIENT_REPLY
    return None


def message_refusal(policy: FaultPolicy, draw: float) -> str | None:
    """The reply refusing a whole message at the end of DATA, or None to accept it.

    One draw per message: [0, permanent_rate) is a permanent failure, the next transient_rate
    of the interval a transient one, so each rate is the fraction of messages it fails.
    """
    if draw < policy.permanent_rate:
        return PERMANENT_MESSAGE_REPLY
    if draw < policy.permanent_rate + policy.transient_rate:
        return TRANSIENT_MESSAGE_REPLY
    return None
