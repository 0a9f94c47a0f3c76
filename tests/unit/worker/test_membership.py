"""What /readyz and the benchmark read of the group: a member once partitions are assigned, not
while it rebalances, and each rebalance timed from revocation to the partitions resumed."""

from __future__ import annotations

import logging

import pytest

from services.worker.membership import GroupMembership


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_first_join_is_no_rebalance() -> None:
    membership = GroupMembership(clock=Clock())
    before = membership.joined

    membership.partitions_assigned()
    membership.partitions_resumed()

    assert not before
    assert membership.joined
    assert (membership.rebalances, membership.last_rebalance_seconds) == (0, None)


def test_a_rebalance_is_timed_from_revocation_to_the_partitions_resumed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    membership = GroupMembership(clock=clock)
    membership.partitions_assigned()
    membership.partitions_resumed()

    with caplog.at_level(logging.INFO, logger="worker"):
        membership.partitions_revoked()
        joined_while_rebalancing = membership.joined
        clock.now += 2.5  # the group's join and sync
        membership.partitions_assigned()
        clock.now += 0.25  # the committed offsets read
        membership.partitions_resumed()

    assert not joined_while_rebalancing
    assert membership.joined
    assert membership.rebalances == 1
    assert membership.last_rebalance_seconds == 2.75
    assert [record.getMessage() for record in caplog.records] == ["rebalance done in 2.750 s"]
