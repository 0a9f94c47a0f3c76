"""The console's picture of the pipeline, built from readings: pure, no I/O.

A `Reading` is what one tick of the snapshot loop saw (Kafka's offsets and the group, the API's
and the sink's counters). `Picture` keeps what must outlive a tick (the last good Kafka reading,
the rate windows, the timeline) and turns each reading into the JSON-ready snapshot the page
draws and `GET /api/snapshot` answers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TIMELINE_LENGTH = 50
# Offsets older than this are not live: the page greys them out and shows their age.
KAFKA_STALE_SECONDS = 2.0
RATE_WINDOW_SECONDS = 5.0
# CURRENT-OFFSET standing still this long while there is lag is a pause (at once when no member
# owns the partition); moving again is news.
PAUSE_SECONDS = 2.0


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    partitions: tuple[int, ...]  # of the topic the console watches


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    log_start_offset: int
    log_end_offset: int


@dataclass(frozen=True)
class KafkaReading:
    """One look at Kafka: the topic's and the dead-letter topic's offsets, and the group."""

    partitions: tuple[PartitionOffsets, ...]
    dlq_partitions: tuple[PartitionOffsets, ...]
    committed_offsets: Mapping[int, int]  # partition -> the group's CURRENT-OFFSET
    group_state: str
    members: tuple[Member, ...]


@dataclass(frozen=True)
class RecentMessage:
    id: str
    message_id: str
    received_at: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    duplicate: bool
    message_id_count: int


@dataclass(frozen=True)
class SinkReading:
    received_total: int
    duplicates_total: int
    latency_p50_seconds: float | None
    latency_p99_seconds: float | None
    latency_count: int  # the latest messages the latency is over
    recent_messages: tuple[RecentMessage, ...]


@dataclass(frozen=True)
class Reading:
    """What one tick saw; an unreachable source is None with the reason in `errors`."""

    at: float  # unix time
    kafka: KafkaReading | None
    accepted_total: float | None  # the API's email_api_emails_accepted_total
    sink: SinkReading | None
    errors: Mapping[str, str] = field(default_factory=dict)  # source -> why it was not read


@dataclass
class Event:
    at: float
    kind: str
    text: str

    def as_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "kind": self.kind, "text": self.text}


class RateMeter:
    """Per-second rate of a growing counter over the last few seconds of samples."""

    def __init__(self, window_seconds: float = RATE_WINDOW_SECONDS) -> None:
        self.window_seconds = window_seconds
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, at: float, total: float) -> None:
        if self._samples and total < self._samples[-1][1]:
            self._samples.clear()  # the counter restarted (its service did): start over
        self._samples.append((at, total))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self.window_seconds:
            self._samples.popleft()

    def per_second(self) -> float | None:
        if len(self._samples) < 2:
            return None
        (first_at, first_total), (last_at, last_total) = self._samples[0], self._samples[-1]
        if last_at <= first_at:
            return None
        return (last_total - first_total) / (last_at - first_at)


@dataclass
class _Progress:
    """How one partition's CURRENT-OFFSET has moved, to tell a pause and a resume."""

    offset: int
    since: float  # when it last moved, or last had nothing to read
    paused: bool = False


class Picture:
    def __init__(self, topic: str, dlq_topic: str, group: str) -> None:
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.group = group
        self.timeline: deque[Event] = deque(maxlen=TIMELINE_LENGTH)
        self.accepted = RateMeter()
        self.delivered = RateMeter()
        self._last_kafka: KafkaReading | None = None
        self._last_kafka_at: float | None = None
        self._kafka_down_since: float | None = None
        self._progress: dict[int, _Progress] = {}
        # Who owns what, as of the last Stable look: Kafka tells assignments only then.
        self._owners: dict[int, Member] = {}

    def update(self, reading: Reading) -> dict[str, Any]:
        """Take one reading; answer the snapshot to show. No Kafka reading and no Kafka
        error means the read is still on its way: the last offsets stand, with their age."""
        if reading.kafka is not None:
            self._note_kafka_changes(reading.at, reading.kafka)
            self._last_kafka, self._last_kafka_at = reading.kafka, reading.at
        elif "kafka" in reading.errors and self._kafka_down_since is None:
            self._kafka_down_since = reading.at
            self._add(
                reading.at, "kafka_down", f"Kafka is not answering: {reading.errors['kafka']}"
            )
        if reading.accepted_total is not None:
            self.accepted.add(reading.at, reading.accepted_total)
        if reading.sink is not None:
            self.delivered.add(reading.at, reading.sink.received_total)
        return self._snapshot(reading)

    def _note_kafka_changes(self, at: float, kafka: KafkaReading) -> None:
        if self._kafka_down_since is not None:
            self._add(
                at, "kafka_back", f"Kafka answers again after {at - self._kafka_down_since:.1f} s"
            )
            self._kafka_down_since = None
            for progress in self._progress.values():
                progress.since = at  # an outage is no pause of the group's
        before = self._last_kafka
        if before is None:
            self._add(at, "first_look", first_look(self.topic, self.group, kafka))
        else:
            if kafka.group_state != before.group_state:
                self._add(
                    at,
                    "group_state",
                    f"group {self.group}: {before.group_state} → {kafka.group_state}",
                )
            self._note_membership(at, before.members, kafka.members)
        self._note_assignment(at, kafka)
        self._note_progress(at, kafka)

    def _note_membership(self, at: float, before: Sequence[Member], now: Sequence[Member]) -> None:
        before_by_id = {member.member_id: member for member in before}
        now_by_id = {member.member_id: member for member in now}
        for member_id in now_by_id.keys() - before_by_id.keys():
            self._add(at, "member_joined", f"{describe(now_by_id[member_id])} joined the group")
        for member_id in before_by_id.keys() - now_by_id.keys():
            self._add(at, "member_left", f"{describe(before_by_id[member_id])} left the group")

    def _note_assignment(self, at: float, kafka: KafkaReading) -> None:
        """While the group rebalances, Kafka shows members without partitions: the owners
        stand as they were until it is Stable again (or their member has left)."""
        present = {member.member_id for member in kafka.members}
        if kafka.group_state != "Stable":
            self._owners = {p: m for p, m in self._owners.items() if m.member_id in present}
            return
        owners_now = owners(kafka.members)
        for partition in sorted(owners_now):
            if owners_now[partition] != self._owners.get(partition):
                self._add(
                    at,
                    "reassigned",
                    f"{self.topic}-{partition} assigned to {describe(owners_now[partition])}",
                )
        self._owners = owners_now

    def _note_progress(self, at: float, kafka: KafkaReading) -> None:
        """A partition with records to read pauses when no member owns it, or when its
        CURRENT-OFFSET stands still for PAUSE_SECONDS; moving again, it resumes."""
        owned = self._owners
        for offsets in kafka.partitions:
            partition = offsets.partition
            # With nothing committed yet, the group starts at the beginning of the log.
            offset = kafka.committed_offsets.get(partition, offsets.log_start_offset)
            progress = self._progress.get(partition)
            if progress is None or offset != progress.offset:
                if progress is not None and progress.paused:
                    self._add(
                        at,
                        "resumed",
                        f"{self.topic}-{partition} resumed at offset {progress.offset} "
                        f"(paused {at - progress.since:.1f} s)",
                    )
                self._progress[partition] = _Progress(offset, since=at)
                continue
            lag = offsets.log_end_offset - offset
            if lag <= 0:
                progress.since = at  # standing still with nothing to read is no pause
            elif not progress.paused and (
                partition not in owned or at - progress.since >= PAUSE_SECONDS
            ):
                progress.paused = True
                self._add(
                    at, "paused", f"{self.topic}-{partition} waits at offset {offset}, lag {lag}"
                )

    def _add(self, at: float, kind: str, text: str) -> None:
        self.timeline.append(Event(at, kind, text))

    def _snapshot(self, reading: Reading) -> dict[str, Any]:
        kafka = self._last_kafka
        kafka_age = None if self._last_kafka_at is None else reading.at - self._last_kafka_at
        live = (
            kafka_age is not None
            and kafka_age <= KAFKA_STALE_SECONDS
            and self._kafka_down_since is None
        )
        kafka_error = reading.errors.get("kafka")
        if not live and kafka_error is None and kafka_age is not None:
            kafka_error = f"no answer for {kafka_age:.0f} s"
        sink = reading.sink
        return {
            "taken_at": iso(reading.at),
            "topic": self.topic,
            "group": self.group,
            "kafka": {
                "live": live,
                "error": None if live else kafka_error,
                "as_of": None if self._last_kafka_at is None else iso(self._last_kafka_at),
                "age_seconds": None if kafka_age is None else round(kafka_age, 3),
            },
            "group_state": kafka.group_state if kafka else None,
            "partitions": partition_rows(kafka, self._owners) if kafka else [],
            "total_lag": total_lag(kafka) if kafka else None,
            "dlq": dlq_summary(self.dlq_topic, kafka),
            "members": [member_json(member) for member in kafka.members] if kafka else [],
            # Nothing is shown as a number a source did not give this time.
            "rates": {
                "accepted_per_second": rounded(self.accepted.per_second())
                if reading.accepted_total is not None
                else None,
                "delivered_per_second": rounded(self.delivered.per_second()) if sink else None,
                "latency_p50_seconds": sink.latency_p50_seconds if sink else None,
                "latency_p99_seconds": sink.latency_p99_seconds if sink else None,
                "latency_messages": sink.latency_count if sink else None,
                "accepted_total": reading.accepted_total,
                "delivered_total": sink.received_total if sink else None,
                "duplicates_total": sink.duplicates_total if sink else None,
            },
            "recent_messages": [message_json(m) for m in sink.recent_messages] if sink else [],
            "sources": {
                name: {"live": name not in reading.errors, "error": reading.errors.get(name)}
                for name in ("api", "sink")
            },
            "timeline": [event.as_json() for event in reversed(self.timeline)],
        }


def first_look(topic: str, group: str, kafka: KafkaReading) -> str:
    positions = ", ".join(
        f"{topic}-{p.partition} at {kafka.committed_offsets.get(p.partition, '-')}"
        for p in sorted(kafka.partitions, key=lambda p: p.partition)
    )
    return (
        f"first look: {group} is {kafka.group_state} with {len(kafka.members)} member(s); "
        f"CURRENT-OFFSET {positions}"
    )


def owners(members: Sequence[Member]) -> dict[int, Member]:
    return {partition: member for member in members for partition in member.partitions}


def describe(member: Member) -> str:
    return f"{member.client_id} ({member.host})"


def partition_rows(kafka: KafkaReading, owner: Mapping[int, Member]) -> list[dict[str, Any]]:
    """One row per partition, in kafka-consumer-groups.sh --describe's terms."""
    rows = []
    for offsets in sorted(kafka.partitions, key=lambda p: p.partition):
        current_offset = kafka.committed_offsets.get(offsets.partition)
        member = owner.get(offsets.partition)
        rows.append(
            {
                "partition": offsets.partition,
                "log_start_offset": offsets.log_start_offset,
                "log_end_offset": offsets.log_end_offset,
                "current_offset": current_offset,
                # As the tool shows it: no committed offset, no lag ("-").
                "lag": None if current_offset is None else offsets.log_end_offset - current_offset,
                "member": None if member is None else member_json(member, with_partitions=False),
            }
        )
    return rows


def total_lag(kafka: KafkaReading) -> int:
    """Everything not yet consumed, counting a partition with no committed offset whole."""
    return sum(
        offsets.log_end_offset
        - kafka.committed_offsets.get(offsets.partition, offsets.log_start_offset)
        for offsets in kafka.partitions
    )


def dlq_summary(dlq_topic: str, kafka: KafkaReading | None) -> dict[str, Any]:
    if kafka is None:
        return {"topic": dlq_topic, "end_offsets": {}, "count": None}
    return {
        "topic": dlq_topic,
        "end_offsets": {str(p.partition): p.log_end_offset for p in kafka.dlq_partitions},
        "count": sum(p.log_end_offset - p.log_start_offset for p in kafka.dlq_partitions),
    }


def member_json(member: Member, with_partitions: bool = True) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "member_id": member.member_id,
        "client_id": member.client_id,
        "host": member.host,
    }
    if with_partitions:
        answer["partitions"] = list(member.partitions)
    return answer


def message_json(message: RecentMessage) -> dict[str, Any]:
    return {
        "id": message.id,
        "message_id": message.message_id,
        "received_at": message.received_at,
        "from": message.sender,
        "to": list(message.recipients),
        "subject": message.subject,
        "duplicate": message.duplicate,
        "message_id_count": message.message_id_count,
    }


def iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, UTC).isoformat(timespec="milliseconds")


def rounded(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 1)
