"""The consumer's life, as in aiokafka's examples: start, subscribe with a rebalance listener,
fetch with `getmany`, hand each partition's records to its PartitionWorker, commit what is
finished; and at the end, let each email in flight finish, commit, and leave the group."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from services.worker.assignment import Assignment
from services.worker.membership import GroupMembership
from shared.kafka import start_when_kafka_answers

log = logging.getLogger("worker")

FETCH_TIMEOUT_MS = 200
# While records stream in, commit at most this often: each commit is a request to Kafka, and a
# crash can only make the worker read the last moment's records again (the dedupe store skips
# them). Revocation and shutdown always commit at once.
COMMIT_INTERVAL_SECONDS = 0.1
# Each step of the shutdown after the drain (leaving the group, closing the producer) gets this.
CLEANUP_SECONDS = 5.0


async def consume(
    consumer: AIOKafkaConsumer,
    bootstrap_servers: str,
    topic: str,
    assignment: Assignment,
    membership: GroupMembership,
    stopping: asyncio.Event,
    *,
    pattern: str | None = None,
) -> None:
    """Consume `topic` (or every topic matching `pattern`, which `topic` then describes)
    until `stopping` is set (or a lane fails); then, whatever ended it, each email in flight
    finishes, the processed position is committed and the consumer leaves the group, so the
    next owner of each partition starts where this one stopped."""
    try:
        if not await start_when_kafka_answers(consumer, bootstrap_servers, stopping):
            return
        listener = RebalanceListener(topic, assignment, membership)
        if pattern is None:
            consumer.subscribe([topic], listener=listener)
        else:
            consumer.subscribe(pattern=pattern, listener=listener)
        last_commit_at = 0.0
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
            assignment.hand_out(batches)
            assignment.check()
            assignment.pause_partitions_with_a_backlog()
            if time.monotonic() - last_commit_at >= COMMIT_INTERVAL_SECONDS:
                last_commit_at = time.monotonic()
                await assignment.commit_finished()
    finally:
        try:
            await assignment.stop_all()
        finally:
            # consumer.stop() leaves the group, so its partitions move to another worker at once;
            # a static member (WORKER_INSTANCE_ID) sends no LeaveGroup: its partitions wait for
            # it to come back until the session timeout (10 s) passes, and only then move.
            await finish_within(consumer.stop(), CLEANUP_SECONDS, "leaving the group")


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits on revocation, as aiokafka's local_state_consumer.py saves its state there: the
    emails in flight finish first, so the next owner starts where this one stopped. On
    assignment, a PartitionWorker starts for each partition, resuming at its committed offset."""

    def __init__(self, topic: str, assignment: Assignment, membership: GroupMembership) -> None:
        self._topic = topic
        self._assignment = assignment
        self._membership = membership

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._membership.partitions_revoked()
        await self._assignment.stop(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        ordered = sorted(assigned)
        # Before any await: getmany may hand out these partitions' records in the meantime.
        self._assignment.start(ordered)
        self._membership.partitions_assigned()
        if not ordered:
            log.info(
                "joined %s with no partition to own (more workers than partitions)", self._topic
            )
        else:
            await self._assignment.read_committed_offsets(ordered)
        self._membership.partitions_resumed()


async def finish_within(step: Awaitable[object], seconds: float, what: str) -> None:
    """Each step of the shutdown is bounded, so SIGTERM always ends the process."""
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.error("gave up %s after %.0f s; exiting anyway", what, seconds)
