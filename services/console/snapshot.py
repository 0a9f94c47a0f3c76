"""The console's picture of the pipeline, built from readings: pure, no I/O.

A `Reading` is what one tick of the snapshot loop saw (the brokers, where each partition's
replicas are, Kafka's offsets and the three groups, the due times waiting in the retry topics,
the API's and the sink's counters). `Picture` keeps what must outlive a tick (the last good
Kafka reading, the brokers seen, the rate windows, the timeline) and turns each reading into the
JSON-ready snapshot the page draws and `GET /api/snapshot` answers.
"""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.retry_topics import retry_topics

if TYPE_CHECKING:
    from shared.settings import Settings

TIMELINE_LENGTH = 50
# Offsets older than this are not live: the page greys them out and shows their age.
KAFKA_STALE_SECONDS = 2.0
RATE_WINDOW_SECONDS = 5.0
# CURRENT-OFFSET standing still this long while there is lag is a pause (at once when no member
# owns the partition); moving again is news.
PAUSE_SECONDS = 2.0
# The group is between generations: its members rejoin (Preparing), then get their partitions.
REBALANCING = ("PreparingRebalance", "CompletingRebalance")
# The due times shown of a retry partition: those of its first records waiting, at most.
RETRY_DUE_RECORDS = 20


@dataclass(frozen=True)
class Watch:
    """What the console watches, by name: email.send and the worker's group, the dead letters,
    the events and the API's group (its read model), and the retry topics and the worker's
    retry group."""

    topic: str
    dlq_topic: str
    group: str
    events_topic: str
    status_group: str
    retry_topics: tuple[str, ...]  # the schedule's, in its order
    retry_group: str

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics every look needs: `make topics` creates them all."""
        return (self.topic, self.dlq_topic, self.events_topic, *self.retry_topics)

    @property
    def groups(self) -> tuple[str, ...]:
        return (self.group, self.status_group, self.retry_group)

    @classmethod
    def of(cls, settings: Settings) -> Watch:
        return cls(
            topic=settings.email_topic,
            dlq_topic=settings.dlq_topic,
            group=settings.consumer_group,
            events_topic=settings.events_topic,
            status_group=settings.status_consumer_group,
            retry_topics=tuple(retry_topics(settings.email_topic, settings.worker_retry_schedule)),
            retry_group=settings.retry_consumer_group,
        )

    def is_retry_topic(self, topic: str) -> bool:
        """The retry group reads every topic named `^<topic>\\.retry-`: those an earlier
        schedule left behind too, until they drain."""
        return topic.startswith(f"{self.topic}.retry-")


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    assignment: tuple[tuple[str, int], ...]  # its (topic, partition) pairs
    group_instance_id: str | None = None  # a static member's (WORKER_INSTANCE_ID), KIP-345

    def partitions_of(self, topic: str) -> tuple[int, ...]:
        return tuple(sorted(p for t, p in self.assignment if t == topic))

    @property
    def partition_names(self) -> list[str]:
        return [f"{topic}-{partition}" for topic, partition in sorted(self.assignment)]

    @property
    def identity(self) -> str:
        """Who the member is across restarts: a static member keeps its instance id (and its
        partitions, back within the session timeout); a dynamic one is new at every join."""
        if self.group_instance_id is None:
            return self.member_id
        return f"instance:{self.group_instance_id}"


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    log_start_offset: int
    log_end_offset: int
    live: bool = True  # False: its leader did not answer this look; the last offsets read


@dataclass(frozen=True)
class Broker:
    node_id: int
    host: str
    port: int
    rack: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Replicas:
    """Where a partition's copies are, as the cluster's metadata says (`kafka-topics.sh
    --describe`'s Leader, Replicas and Isr)."""

    topic: str
    partition: int
    leader: int | None  # None while the partition has no leader
    replicas: tuple[int, ...]
    isr: tuple[int, ...]  # the replicas in sync with the leader

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True)
class GroupReading:
    """One consumer group as `kafka-consumer-groups.sh --describe --group` shows it: its
    CURRENT-OFFSETs, state and members."""

    state: str
    members: tuple[Member, ...]
    committed_offsets: Mapping[tuple[str, int], int]  # (topic, partition) -> CURRENT-OFFSET
    protocol: str = ""  # the partition assignor the members agreed on
    # As the coordinator last wrote it to __consumer_offsets (read for the worker's group
    # only): None until the console has read that far, or while the group has none.
    generation: int | None = None
    coordinator: int | None = None  # the broker that coordinates the group
    # Set when the group is from an earlier look: why it was not read this time.
    error: str | None = None

    def committed(self, topic: str) -> dict[int, int]:
        """partition -> CURRENT-OFFSET, of the partitions of `topic` with one."""
        return {p: offset for (t, p), offset in self.committed_offsets.items() if t == topic}


@dataclass(frozen=True)
class DueRecord:
    """A record waiting in a retry topic, and when it is due, from its `due_at` header."""

    offset: int
    due_at: float | None  # unix time; None when its header could not be read


@dataclass(frozen=True)
class KafkaReading:
    """One look at Kafka: the watched topics' offsets, the three groups, the records waiting in
    the retry topics, the live brokers and where each partition's replicas are."""

    offsets: Mapping[str, tuple[PartitionOffsets, ...]]  # topic -> its partitions, in order
    groups: Mapping[str, GroupReading]  # by group name
    brokers: tuple[Broker, ...] = ()  # the live brokers, as the cluster's metadata lists them
    replicas: tuple[Replicas, ...] = ()  # of the watched topics' partitions
    # Brokers the metadata lists but that did not answer the console's request this look.
    unanswered: Mapping[int, str] = field(default_factory=dict)  # node id -> why
    # The first records waiting in each retry partition, from its group's CURRENT-OFFSET on;
    # read again only when the partition's offsets moved, at most every few seconds.
    due: Mapping[tuple[str, int], tuple[DueRecord, ...]] = field(default_factory=dict)

    def partitions_of(self, topic: str) -> tuple[PartitionOffsets, ...]:
        return self.offsets.get(topic, ())


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
    def __init__(self, watch: Watch, bootstrap_servers: str = "") -> None:
        self.watch = watch
        self.topic = watch.topic
        self.dlq_topic = watch.dlq_topic
        self.group = watch.group
        # The brokers the console was told of: one missing from the metadata is down.
        self.bootstrap_servers = tuple(
            server.strip() for server in bootstrap_servers.split(",") if server.strip()
        )
        self.timeline: deque[Event] = deque(maxlen=TIMELINE_LENGTH)
        self.accepted = RateMeter()
        self.delivered = RateMeter()
        self._brokers_seen: dict[int, Broker] = {}  # node id -> as the metadata last listed it
        self._broker_rows: list[dict[str, Any]] = []
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
        self._note_brokers(at, kafka)
        self._note_replicas(at, before, kafka)
        group = kafka.groups[self.group]
        if before is None:
            self._add(at, "first_look", first_look(self.topic, self.group, kafka))
        else:
            was = before.groups[self.group]
            if group.state != was.state:
                self._add(at, "group_state", f"group {self.group}: {was.state} → {group.state}")
            rebalance = rebalance_between(was, group)
            self._note_membership(at, was, group, rebalance)
            if rebalance is not None:
                self._add(at, "rebalance", f"group {self.group} rebalanced ({rebalance})")
            self._note_generation(at, was.generation, group.generation)
        self._note_assignment(at, group)
        self._note_progress(at, kafka.partitions_of(self.topic), group.committed(self.topic))

    def _note_brokers(self, at: float, kafka: KafkaReading) -> None:
        """A broker is up while the metadata lists it and it answers the console, not
        answering while only the first holds, down once the metadata no longer lists it."""
        for broker in kafka.brokers:
            self._brokers_seen[broker.node_id] = broker
        rows = broker_rows(self.bootstrap_servers, self._brokers_seen, kafka, self.watch.groups)
        before = {row["address"]: row["status"] for row in self._broker_rows}
        for row in rows:
            status = row["status"]
            if status == before.get(row["address"], "up"):
                continue
            name = broker_name(row)
            if status == "up":
                self._add(at, "broker_up", f"{name} is up again")
            elif status == "down":
                self._add(at, "broker_down", f"{name} is down: {row['error']}")
            else:
                self._add(at, "broker_unanswered", f"{name} does not answer: {row['error']}")
        self._broker_rows = rows

    def _note_replicas(self, at: float, before: KafkaReading | None, now: KafkaReading) -> None:
        """New leaders, and partitions whose in-sync replicas fell short of their replicas or
        caught up again: one event for each, listing the partitions."""
        earlier = {r.name: r for r in before.replicas} if before is not None else {}
        moved, short, whole = [], [], []
        for replicas in now.replicas:
            was = earlier.get(replicas.name)
            if was is not None and was.leader != replicas.leader:
                moved.append(f"{replicas.name} {node(was.leader)} → {node(replicas.leader)}")
            if replicas.under_replicated and (was is None or not was.under_replicated):
                short.append(
                    f"{replicas.name} (ISR {ids(replicas.isr)} of {ids(replicas.replicas)})"
                )
            if was is not None and was.under_replicated and not replicas.under_replicated:
                whole.append(replicas.name)
        if moved:
            self._add(at, "leader_moved", f"new leader: {', '.join(moved)}")
        if short:
            self._add(at, "under_replicated", f"under-replicated: {', '.join(short)}")
        if whole:
            self._add(at, "in_sync", f"every replica in sync again: {', '.join(whole)}")

    def _note_generation(self, at: float, before: int | None, now: int | None) -> None:
        """The generation the coordinator wrote when a rebalance completed: every rebalance
        shows here, those begun and ended between two looks too."""
        if now is not None and now != before:
            was = "" if before is None else f" (was {before})"
            self._add(at, "generation", f"group {self.group} is at generation {now}{was}")

    def _note_membership(
        self, at: float, before: GroupReading, now: GroupReading, rebalance: str | None
    ) -> None:
        """Members joining and leaving; a static member back under a new member id is neither
        when the group did not rebalance: it got its own partitions back."""
        before_by_identity = {member.identity: member for member in before.members}
        now_by_identity = {member.identity: member for member in now.members}
        generation = now.generation
        rebalanced = rebalance is not None or generation != before.generation
        for identity in now_by_identity.keys() - before_by_identity.keys():
            self._add(
                at, "member_joined", f"{describe(now_by_identity[identity])} joined the group"
            )
        for identity in before_by_identity.keys() - now_by_identity.keys():
            self._add(at, "member_left", f"{describe(before_by_identity[identity])} left the group")
        for identity in now_by_identity.keys() & before_by_identity.keys():
            member = now_by_identity[identity]
            if member.member_id == before_by_identity[identity].member_id:
                continue
            if not rebalanced:
                partitions = (
                    ", ".join(f"{self.topic}-{p}" for p in member.partitions_of(self.topic))
                    or "none"
                )
                unchanged = "" if generation is None else f" (generation {generation}, unchanged)"
                self._add(
                    at,
                    "static_member_back",
                    f"{member.group_instance_id} (static) came back: same partitions "
                    f"{partitions}, no rebalance{unchanged}",
                )
            else:
                self._add(
                    at,
                    "static_member_back",
                    f"{member.group_instance_id} (static) came back, and the group rebalanced",
                )

    def _note_assignment(self, at: float, group: GroupReading) -> None:
        """While the group rebalances, Kafka shows members without partitions: the owners
        stand as they were until it is Stable again (or their member has left)."""
        present = {member.identity for member in group.members}
        if group.state != "Stable":
            self._owners = {p: m for p, m in self._owners.items() if m.identity in present}
            return
        owners_now = owners(group.members, self.topic)
        for partition in sorted(owners_now):
            owner_before = self._owners.get(partition)
            if owner_before is None or owners_now[partition].identity != owner_before.identity:
                self._add(
                    at,
                    "reassigned",
                    f"{self.topic}-{partition} assigned to {describe(owners_now[partition])}",
                )
        self._owners = owners_now

    def _note_progress(
        self, at: float, partitions: Sequence[PartitionOffsets], committed: Mapping[int, int]
    ) -> None:
        """A partition with records to read pauses when no member owns it, or when its
        CURRENT-OFFSET stands still for PAUSE_SECONDS; moving again, it resumes."""
        owned = self._owners
        for offsets in partitions:
            partition = offsets.partition
            # With nothing committed yet, the group starts at the beginning of the log.
            offset = committed.get(partition, offsets.log_start_offset)
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
        group = kafka.groups[self.group] if kafka else None
        partitions = kafka.partitions_of(self.topic) if kafka else ()
        committed = group.committed(self.topic) if group else {}
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
            "brokers": self._broker_rows,
            "group_state": group.state if group else None,
            "group_protocol": (group.protocol or None) if group else None,
            "group_coordinator": group.coordinator if group else None,
            "group_error": group.error if group else None,
            "group_generation": group.generation if group else None,
            "partitions": partition_rows(
                self.topic, partitions, committed, self._owners, kafka.replicas
            )
            if kafka
            else [],
            "under_replicated": under_replicated(kafka) if kafka else [],
            "total_lag": total_lag(partitions, committed) if kafka else None,
            "dlq": dlq_summary(self.dlq_topic, kafka),
            "members": [member_json(member, self.topic) for member in group.members]
            if group
            else [],
            "events_consumer": consumer_summary(
                self.watch.events_topic, self.watch.status_group, kafka
            ),
            "retries": retry_summary(self.watch, kafka, reading.at),
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


def first_look(topic: str, group_name: str, kafka: KafkaReading) -> str:
    group = kafka.groups[group_name]
    committed = group.committed(topic)
    positions = ", ".join(
        f"{topic}-{p.partition} at {committed.get(p.partition, '-')}"
        for p in sorted(kafka.partitions_of(topic), key=lambda p: p.partition)
    )
    generation = "" if group.generation is None else f", generation {group.generation}"
    return (
        f"first look: {group_name} is {group.state} with {len(group.members)} member(s)"
        f"{generation}; CURRENT-OFFSET {positions}"
    )


def rebalance_between(before: GroupReading, now: GroupReading) -> str | None:
    """How two looks in a row show that the group rebalanced (took a new generation), or None
    if they do not. A rebalance that begins and ends between two looks shows only if it changed
    the members or the partitions they own: the count is a lower bound."""
    if now.state in REBALANCING:
        if before.state in REBALANCING:
            return None  # the one counted when it began
        return f"{before.state} → {now.state}"
    if before.state in REBALANCING:
        return None
    if {m.identity for m in before.members} != {m.identity for m in now.members}:
        return "members changed between two looks"
    if before.state == now.state == "Stable" and {
        m.identity: set(m.assignment) for m in before.members
    } != {m.identity: set(m.assignment) for m in now.members}:
        return "partitions moved between two looks"
    return None


def broker_rows(
    bootstrap_servers: Sequence[str],
    seen: Mapping[int, Broker],
    kafka: KafkaReading,
    groups: Sequence[str],
) -> list[dict[str, Any]]:
    """Every broker the console knows of, by node id, with the partitions it leads and the
    groups (of `groups`) it coordinates."""
    live = {broker.node_id for broker in kafka.brokers}
    leads: dict[int, list[str]] = defaultdict(list)
    for replicas in kafka.replicas:
        if replicas.leader is not None:
            leads[replicas.leader].append(replicas.name)
    coordinates: dict[int, list[str]] = defaultdict(list)
    for name in groups:
        group = kafka.groups.get(name)
        if group is not None and group.coordinator is not None:
            coordinates[group.coordinator].append(name)
    rows = []
    for node_id, broker in sorted(seen.items()):
        if node_id not in live:
            status, error = "down", "the cluster's metadata no longer lists it"
        elif node_id in kafka.unanswered:
            status, error = "not_answering", kafka.unanswered[node_id]
        else:
            status, error = "up", None
        rows.append(
            {
                "node_id": node_id,
                "address": broker.address,
                "rack": broker.rack,
                "status": status,
                "error": error,
                "leads": leads[node_id],
                "coordinates": coordinates[node_id],
            }
        )
    # A bootstrap server no listed broker has the address of is down since before the
    # console started, unless it is another name of one: then the list is not short.
    if len(seen) < len(bootstrap_servers):
        known = {same_host(broker.address) for broker in seen.values()}
        for address in bootstrap_servers:
            if same_host(address) not in known:
                rows.append(
                    {
                        "node_id": None,
                        "address": address,
                        "rack": None,
                        "status": "down",
                        "error": "a bootstrap server the cluster's metadata has not listed",
                        "leads": [],
                        "coordinates": [],
                    }
                )
    return rows


def under_replicated(kafka: KafkaReading) -> list[str]:
    """The partitions of the watched topics with fewer replicas in sync than they have."""
    return [replicas.name for replicas in kafka.replicas if replicas.under_replicated]


def same_host(address: str) -> str:
    """An address as the metadata would list it: `localhost` is 127.0.0.1."""
    host, _, port = address.lower().rpartition(":")
    return f"{'127.0.0.1' if host in ('localhost', '[::1]') else host}:{port}"


def broker_name(row: Mapping[str, Any]) -> str:
    if row["node_id"] is None:
        return f"the broker at {row['address']}"
    return f"broker {row['node_id']} ({row['address']})"


def node(node_id: int | None) -> str:
    return "none" if node_id is None else str(node_id)


def ids(node_ids: Sequence[int]) -> str:
    return f"[{', '.join(map(str, node_ids))}]"


def owners(members: Sequence[Member], topic: str) -> dict[int, Member]:
    return {partition: member for member in members for partition in member.partitions_of(topic)}


def describe(member: Member) -> str:
    if member.group_instance_id is not None:
        return f"{member.group_instance_id} (static; {member.client_id}, {member.host})"
    return f"{member.client_id} ({member.host})"


def partition_rows(
    topic: str,
    partitions: Sequence[PartitionOffsets],
    committed: Mapping[int, int],
    owner: Mapping[int, Member],
    replicas_of: Sequence[Replicas],
) -> list[dict[str, Any]]:
    """One row per partition, in kafka-consumer-groups.sh --describe's terms, with where its
    replicas are in kafka-topics.sh --describe's."""
    where = {r.partition: r for r in replicas_of if r.topic == topic}
    rows = []
    for offsets in sorted(partitions, key=lambda p: p.partition):
        current_offset = committed.get(offsets.partition)
        member = owner.get(offsets.partition)
        replicas = where.get(offsets.partition)
        rows.append(
            {
                "partition": offsets.partition,
                "log_start_offset": offsets.log_start_offset,
                "log_end_offset": offsets.log_end_offset,
                "current_offset": current_offset,
                # As the tool shows it: no committed offset, no lag ("-").
                "lag": None if current_offset is None else offsets.log_end_offset - current_offset,
                "member": None if member is None else member_json(member),
                "offsets_live": offsets.live,
                "leader": replicas.leader if replicas else None,
                "replicas": list(replicas.replicas) if replicas else [],
                "isr": list(replicas.isr) if replicas else [],
                "under_replicated": replicas.under_replicated if replicas else False,
            }
        )
    return rows


def total_lag(partitions: Sequence[PartitionOffsets], committed: Mapping[int, int]) -> int:
    """Everything not yet consumed, counting a partition with no committed offset whole."""
    return sum(waiting(offsets, committed) for offsets in partitions)


def waiting(offsets: PartitionOffsets, committed: Mapping[int, int]) -> int:
    """The records of a partition its group has not read: from its CURRENT-OFFSET, or with
    none committed yet, from the log start (where it will begin)."""
    start = committed.get(offsets.partition, offsets.log_start_offset)
    return max(offsets.log_end_offset - start, 0)


def dlq_summary(dlq_topic: str, kafka: KafkaReading | None) -> dict[str, Any]:
    if kafka is None:
        return {"topic": dlq_topic, "end_offsets": {}, "count": None}
    partitions = kafka.partitions_of(dlq_topic)
    return {
        "topic": dlq_topic,
        "end_offsets": {str(p.partition): p.log_end_offset for p in partitions},
        "count": sum(p.log_end_offset - p.log_start_offset for p in partitions),
    }


def consumer_summary(topic: str, group_name: str, kafka: KafkaReading | None) -> dict[str, Any]:
    """Another group's partition picture, in the same terms as the worker's: the API's
    `email-status-group` reading the events into its read model."""
    group = kafka.groups.get(group_name) if kafka else None
    if kafka is None or group is None:
        return {
            "topic": topic, "group": group_name, "state": None, "protocol": None,
            "error": None, "partitions": [], "total_lag": None, "members": [],
        }  # fmt: skip
    partitions, committed = kafka.partitions_of(topic), group.committed(topic)
    owner = owners(group.members, topic) if group.state == "Stable" else {}
    return {
        "topic": topic,
        "group": group_name,
        "state": group.state,
        "protocol": group.protocol or None,
        "error": group.error,
        "partitions": partition_rows(topic, partitions, committed, owner, kafka.replicas),
        "total_lag": total_lag(partitions, committed),
        "members": [member_json(member, topic) for member in group.members],
    }


def retry_summary(watch: Watch, kafka: KafkaReading | None, at: float) -> dict[str, Any]:
    """The records waiting in each retry topic (its log end less the retry group's
    CURRENT-OFFSET) and when the first ones are due: the schedule's topics in its order, then
    any an earlier schedule left behind."""
    group = kafka.groups.get(watch.retry_group) if kafka else None
    if kafka is None or group is None:
        return {
            "group": watch.retry_group, "state": None, "error": None, "members": [],
            "pending": None, **next_due_json(None, at), "topics": [],
        }  # fmt: skip
    left_behind = sorted(
        topic
        for topic in kafka.offsets
        if watch.is_retry_topic(topic) and topic not in watch.retry_topics
    )
    topics: list[dict[str, Any]] = []
    first_due: list[float | None] = []
    for topic in (*watch.retry_topics, *left_behind):
        rows, due_at = retry_rows(topic, kafka, group, at)
        topics.append(
            {
                "topic": topic,
                "in_schedule": topic in watch.retry_topics,
                "pending": sum(row["pending"] for row in rows),
                **next_due_json(due_at, at),
                "partitions": rows,
            }
        )
        first_due.append(due_at)
    return {
        "group": watch.retry_group,
        "state": group.state,
        "error": group.error,
        "members": [
            {**member_json(member), "assigned": member.partition_names} for member in group.members
        ],
        "pending": sum(topic["pending"] for topic in topics),
        **next_due_json(soonest(first_due), at),
        "topics": topics,
    }


def retry_rows(
    topic: str, kafka: KafkaReading, group: GroupReading, at: float
) -> tuple[list[dict[str, Any]], float | None]:
    """A retry topic's partitions: the records waiting in each and the due times of the first
    ones (those read from its CURRENT-OFFSET that still wait); and the soonest of them."""
    committed = group.committed(topic)
    owner = owners(group.members, topic) if group.state == "Stable" else {}
    rows: list[dict[str, Any]] = []
    first_due: list[float | None] = []
    for offsets in kafka.partitions_of(topic):
        start = committed.get(offsets.partition, offsets.log_start_offset)
        due = [
            record
            for record in kafka.due.get((topic, offsets.partition), ())
            if start <= record.offset < offsets.log_end_offset
        ][:RETRY_DUE_RECORDS]
        due_at = soonest(record.due_at for record in due)
        first_due.append(due_at)
        member = owner.get(offsets.partition)
        rows.append(
            {
                "partition": offsets.partition,
                "current_offset": committed.get(offsets.partition),
                "log_end_offset": offsets.log_end_offset,
                "pending": waiting(offsets, committed),
                "offsets_live": offsets.live,
                "member": None if member is None else member_json(member),
                "due": [
                    {
                        "offset": record.offset,
                        "due_at": None if record.due_at is None else iso(record.due_at),
                        "due_in_seconds": seconds_until(record.due_at, at),
                    }
                    for record in due
                ],
                **next_due_json(due_at, at),
            }
        )
    return rows, soonest(first_due)


def soonest(due_at: Iterable[float | None]) -> float | None:
    """The soonest of the due times known. Records fall due about in offset order, but one
    produced again after a crash may come after records due later than it."""
    known = [moment for moment in due_at if moment is not None]
    return min(known) if known else None


def seconds_until(moment: float | None, at: float) -> float | None:
    """Negative when overdue: due, and no retry consumer has taken it yet."""
    return None if moment is None else round(moment - at, 1)


def next_due_json(due_at: float | None, at: float) -> dict[str, Any]:
    return {
        "next_due_at": None if due_at is None else iso(due_at),
        "next_due_in_seconds": seconds_until(due_at, at),
    }


def member_json(member: Member, topic: str | None = None) -> dict[str, Any]:
    """Who the member is; with its partitions of `topic` when one is given."""
    answer: dict[str, Any] = {
        "member_id": member.member_id,
        "group_instance_id": member.group_instance_id,
        "client_id": member.client_id,
        "host": member.host,
    }
    if topic is not None:
        answer["partitions"] = list(member.partitions_of(topic))
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


def describe_error(error: Exception) -> str:
    """One line: the error's text, with its type unless the text already names it."""
    text, kind = str(error), type(error).__name__
    return text if text.startswith(kind) else f"{kind}: {text}" if text else kind
