"""Which extra copies a SIGKILL explains, and which tries it interrupted: the evidence the chaos
harness asks for before it excuses a duplicate (docs/guarantees.md, "The one instant"). Pure.

A worker SIGKILLed between the server's 250 and its dedupe write sends the email again to those
recipients once the record is read again: the one instant no system can close with an SMTP
server, which has no transactions. Anything else that sends a recipient a second copy is a
defect, and fails the scenario.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from tests.chaos.event_ledger import EventLedger, Pair

# The sink stores an email (with an fsync) before its 250; a kill up to this long after the
# stored copy's timestamp can still fall between the 250 and the worker's dedupe write. And the
# sink may store, a moment after the kill, the final "." a worker sent just before it: in a burst
# of emails its loop reads some a few milliseconds late. No worker sends the recipient again
# that soon after a kill: its partitions move only once the group notices, seconds later.
KILL_WINDOW_SECONDS = 0.25


def explained_by_kills(
    arrivals: Sequence[float], kills: Sequence[float], deferred_at: Iterable[float]
) -> bool:
    """Whether SIGKILLs explain every extra copy of one recipient's email.

    Evidence, all required: each copy but the last (the one the worker recorded) reached the
    sink within KILL_WINDOW_SECONDS of a kill, before or after it; and the worker never
    deferred the recipient after its first copy was stored. A worker that sends again by itself
    (no reply to the final ".", so the outcome is unknown) defers the recipient first, with a
    `deferred` event, so such a copy is never taken for the kill's.
    """
    if len(arrivals) < 2:
        return False
    ordered = sorted(arrivals)
    if any(at >= ordered[0] for at in deferred_at):
        return False
    return all(
        any(abs(kill - arrival) < KILL_WINDOW_SECONDS for kill in kills) for arrival in ordered[:-1]
    )


def kill_window_duplicates(
    copies: Mapping[Pair, Sequence[float]], kills: Sequence[float], ledger: EventLedger
) -> dict[Pair, int]:
    """Recipient -> the extra copies the kills explain: for each recipient with more than one
    copy, its single final event is `sent`, and `explained_by_kills` holds."""
    explained = {}
    for recipient, arrivals in copies.items():
        final = ledger.final_of(recipient)
        if (
            len(arrivals) > 1
            and final is not None
            and final.type == "sent"
            and explained_by_kills(arrivals, kills, ledger.deferred_at(recipient))
        ):
            explained[recipient] = len(arrivals) - 1
    return explained


def by_email(
    explained: Mapping[Pair, int], copies: Mapping[Pair, Sequence[float]]
) -> dict[str, int]:
    """Message id -> the extra copies of the email the kills explain, for each email whose
    every recipient with more than one copy is explained: the most extra copies any of them
    got, since a transaction sent again copies the email once, to each recipient it names."""
    duplicated: dict[str, list[Pair]] = {}
    for recipient, arrivals in copies.items():
        if len(arrivals) > 1:
            duplicated.setdefault(recipient[0], []).append(recipient)
    return {
        message_id: max(explained[recipient] for recipient in recipients)
        for message_id, recipients in duplicated.items()
        if all(recipient in explained for recipient in recipients)
    }


def first_try_interrupted(
    accepted_at: float,
    sent_at: float,
    sent_attempt: int | None,
    outages: Iterable[tuple[float, float]],
) -> bool:
    """Whether a worker's outage (from its SIGKILL until it was a member of the group again,
    the rebalances included) overlapped the time from an email's 202 to a recipient's `sent`
    at its first try (attempt 0).

    The sink defers a `deferred+tag@` address once, at its first RCPT TO. A try cut off after
    that RCPT and before the worker wrote the outcome leaves no deferred event, and the next
    try is accepted at once. Only a kill or a rebalance in between can do that.
    """
    return sent_attempt == 0 and any(
        killed <= sent_at and accepted_at <= back for killed, back in outages
    )
