"""Fault injection: which recipients and which messages the sink refuses, and with what reply;
greylisting; a rate limit; and Mailpit's chaos triggers, which refuse SMTP steps at random and
change through the HTTP API.

Decisions are pure: the caller hands in the recipient or a random draw in [0, 1) and sends the
reply. Three parts hold state: Chaos, the live triggers, which draws for them; the Greylist, the
pairs it has seen and when; and the RateLimit, the times of the latest emails. The last two read
the clock they are handed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from services.smtp_sink.simulator.greylist import Greylist
from services.smtp_sink.simulator.rate_limit import RateLimit

TRANSIENT_RECIPIENT_REPLY = (
    "451 4.3.0 Injected transient failure for this recipient, try again later"
)
PERMANENT_RECIPIENT_REPLY = "550 5.1.1 Injected permanent failure: no such recipient"
TRANSIENT_MESSAGE_REPLY = "451 4.3.0 Injected transient failure for this message, try again later"
PERMANENT_MESSAGE_REPLY = "550 5.7.1 Injected permanent failure: this message is refused"

LOWEST_ERROR_CODE, HIGHEST_ERROR_CODE = 400, 599


class Stage(Enum):
    """The SMTP steps Mailpit's chaos can fail, by the names its API gives their triggers."""

    SENDER = "Sender"  # MAIL FROM
    RECIPIENT = "Recipient"  # each RCPT TO
    AUTHENTICATION = "Authentication"  # AUTH, where authentication is configured


@dataclass(frozen=True)
class ChaosTrigger:
    """Fail a step with error_code in probability percent of the tries (0 never fails)."""

    error_code: int
    probability: int


# Mailpit's defaults, which a trigger left out of a PUT returns to.
DEFAULT_ERROR_CODES = {Stage.SENDER: 451, Stage.RECIPIENT: 451, Stage.AUTHENTICATION: 535}


@dataclass(frozen=True)
class ChaosTriggers:
    sender: ChaosTrigger = ChaosTrigger(DEFAULT_ERROR_CODES[Stage.SENDER], 0)
    recipient: ChaosTrigger = ChaosTrigger(DEFAULT_ERROR_CODES[Stage.RECIPIENT], 0)
    authentication: ChaosTrigger = ChaosTrigger(DEFAULT_ERROR_CODES[Stage.AUTHENTICATION], 0)

    def for_stage(self, stage: Stage) -> ChaosTrigger:
        return {
            Stage.SENDER: self.sender,
            Stage.RECIPIENT: self.recipient,
            Stage.AUTHENTICATION: self.authentication,
        }[stage]

    def describe(self) -> str:
        """One line for the log: "Sender 451 at 0%, Recipient 451 at 50%, ..."."""
        return ", ".join(
            f"{stage.value} {self.for_stage(stage).error_code} at "
            f"{self.for_stage(stage).probability}%"
            for stage in Stage
        )


class ChaosError(ValueError):
    """A chaos configuration the sink refuses; its text says why, for the HTTP 400."""


class Chaos:
    """The live chaos triggers: PUT /api/v1/chaos replaces them while SMTP sessions run.

    Like Mailpit started with --enable-chaos, but always on: the sink is a test tool, and every
    trigger starts at 0 %, so nothing fails until a client asks for it.
    """

    def __init__(self, draw: Callable[[], float] = random.random) -> None:
        self.triggers = ChaosTriggers()
        self._draw = draw

    def refusal(self, stage: Stage) -> str | None:
        trigger = self.triggers.for_stage(stage)
        if trigger.probability == 0:
            return None  # no draw: a sink without chaos uses no randomness for it
        return chaos_refusal(stage, trigger, self._draw())


@dataclass(frozen=True)
class FaultPolicy:
    transient_recipients: frozenset[str]  # lower-cased
    permanent_recipients: frozenset[str]  # lower-cased
    transient_rate: float
    permanent_rate: float
    # The parts that change at run time; the lists and rates are the settings'.
    chaos: Chaos = field(default_factory=Chaos, compare=False)
    greylist: Greylist = field(default_factory=Greylist.off, compare=False)
    rate_limit: RateLimit | None = field(default=None, compare=False)  # None: no limit

    @classmethod
    def of(
        cls,
        transient_recipients: Iterable[str] = (),
        permanent_recipients: Iterable[str] = (),
        transient_rate: float = 0.0,
        permanent_rate: float = 0.0,
        chaos: Chaos | None = None,
        greylist: Greylist | None = None,
        rate_limit: RateLimit | None = None,
    ) -> FaultPolicy:
        return cls(
            frozenset(address.lower() for address in transient_recipients),
            frozenset(address.lower() for address in permanent_recipients),
            transient_rate,
            permanent_rate,
            chaos or Chaos(),
            greylist or Greylist.off(),
            rate_limit,
        )


def recipient_refusal(policy: FaultPolicy, address: str, sender: str = "") -> str | None:
    """The reply refusing RCPT TO:<address> after MAIL FROM:<sender>, or None to accept it.

    A listed recipient always fails as listed, a permanent listing first; a recipient at a
    greylisted domain fails while its pair with the sender is greylisted; any other recipient
    fails as often as the Recipient chaos trigger says.
    """
    recipient = address.lower()
    if recipient in policy.permanent_recipients:
        return PERMANENT_RECIPIENT_REPLY
    if recipient in policy.transient_recipients:
        return TRANSIENT_RECIPIENT_REPLY
    greylisted = policy.greylist.refusal(sender, recipient)
    if greylisted is not None:
        return greylisted
    return policy.chaos.refusal(Stage.RECIPIENT)


def rate_limit_refusal(policy: FaultPolicy) -> str | None:
    """The reply refusing MAIL FROM over the rate limit, or None (and the email counted) to go
    on. The connection is to be closed after it, as after any 421 (RFC 5321 3.8)."""
    limit = policy.rate_limit
    if limit is None or limit.take():
        return None
    return f"421 4.7.0 Rate limit exceeded: more than {limit.limit} emails a second, slow down"


def sender_refusal(policy: FaultPolicy) -> str | None:
    """The reply refusing MAIL FROM, or None to accept it: the Sender chaos trigger."""
    return policy.chaos.refusal(Stage.SENDER)


def authentication_refusal(policy: FaultPolicy) -> str | None:
    """The reply refusing AUTH before the credentials are checked: the Authentication trigger."""
    return policy.chaos.refusal(Stage.AUTHENTICATION)


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


def chaos_refusal(stage: Stage, trigger: ChaosTrigger, draw: float) -> str | None:
    """Mailpit's reply when the trigger fires for this draw in [0, 1), else None.

    Mailpit draws a whole percent in [0, 100) and fires below the probability; so does this.
    """
    if int(draw * 100) < trigger.probability:
        return f"{trigger.error_code} Chaos {stage.value.lower()} error"
    return None


def chaos_triggers(body: object) -> ChaosTriggers:
    """The triggers a PUT /api/v1/chaos body sets, read as Mailpit reads it.

    Each trigger left out, null or with ErrorCode 0 gets Mailpit's default code; a left-out
    Probability is 0, so `{}` turns every trigger off. Names match without regard to case, as
    Go's JSON decoding matches them. Unlike Mailpit, a name it does not know is refused: a typo
    must not switch chaos off quietly.
    """
    triggers = _object(body, "the body")
    stages = {stage.value.lower(): stage for stage in Stage}
    unknown = sorted(name for name in triggers if name.lower() not in stages)
    if unknown:
        raise ChaosError(
            f"unknown chaos trigger {', '.join(map(repr, unknown))}: "
            f"expected {', '.join(stage.value for stage in Stage)}"
        )
    given = {stages[name.lower()]: value for name, value in triggers.items()}
    return ChaosTriggers(
        sender=_trigger(Stage.SENDER, given.get(Stage.SENDER)),
        recipient=_trigger(Stage.RECIPIENT, given.get(Stage.RECIPIENT)),
        authentication=_trigger(Stage.AUTHENTICATION, given.get(Stage.AUTHENTICATION)),
    )


def _trigger(stage: Stage, value: object) -> ChaosTrigger:
    if value is None:
        return ChaosTrigger(DEFAULT_ERROR_CODES[stage], 0)
    fields = _object(value, stage.value)
    known = {"errorcode": "ErrorCode", "probability": "Probability"}
    unknown = sorted(name for name in fields if name.lower() not in known)
    if unknown:
        raise ChaosError(
            f"{stage.value}: unknown field {', '.join(map(repr, unknown))}: "
            "expected ErrorCode and Probability"
        )
    given = {known[name.lower()]: number for name, number in fields.items()}
    error_code = _integer(stage, "ErrorCode", given.get("ErrorCode")) or DEFAULT_ERROR_CODES[stage]
    probability = _integer(stage, "Probability", given.get("Probability"))
    if not LOWEST_ERROR_CODE <= error_code <= HIGHEST_ERROR_CODE:
        raise ChaosError(
            f"{stage.value}: ErrorCode must be between {LOWEST_ERROR_CODE} and "
            f"{HIGHEST_ERROR_CODE}, not {error_code}"
        )
    if not 0 <= probability <= 100:
        raise ChaosError(f"{stage.value}: Probability must be between 0 and 100, not {probability}")
    return ChaosTrigger(error_code, probability)


def _object(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ChaosError(f"{what} must be a JSON object, not {_json_type(value)}")
    return value


def _integer(stage: Stage, name: str, value: object) -> int:
    if value is None:
        return 0
    # bool is an int to Python, not to JSON; and Go refuses 5.0 for an int as well.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ChaosError(f"{stage.value}: {name} must be a whole number, not {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return "an array" if isinstance(value, list) else "an object"
