"""The chaos harness: a private stack per scenario, a steady stream of emails through the API,
and the reconciliation of four independent records (the API's 202s, the topic, the sink, and
what `email.events` says happened to each recipient)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from services.smtp_sink.simulator.addresses import SIMULATOR_DOMAIN
from shared.kafka import admin_client
from shared.schema import PoisonRecord, parse_record
from tests.chaos.event_ledger import (
    EventLedger,
    EventProblems,
    Pair,
    event_problems,
    ledger_of,
    pair,
    unsettled,
)
from tests.chaos.kill_window import by_email, kill_window_duplicates
from tests.chaos.report import Result
from tests.private_stack import PrivateStack, read_sink

# Every chaos stack retries a deferred recipient after 2 s, then every 4 s (the default waits
# a minute first): a deferral is then retried within a scenario's drain.
CHAOS_RETRY_SCHEDULE = "2s,4s"
# After the sink has every copy, how long the last events (and retries) may still take.
EVENTS_GRACE_SECONDS = 15.0


def bouncing_recipient(number: int) -> str:
    """A recipient the sink refuses for good (550 5.1.1), one address per email: an address
    that bounced once goes on the suppression list, so the same one again would be suppressed
    by the worker, not bounced by the sink."""
    return f"bounced+{number}@{SIMULATOR_DOMAIN}"


def is_bouncing(address: str) -> bool:
    return address.startswith("bounced+") and address.endswith(f"@{SIMULATOR_DOMAIN}")


@dataclass(frozen=True)
class Sizes:
    emails: int
    rate: float  # emails per second offered to the API
    cycles: int  # fault cycles in the restart and kill scenarios
    smtp_down_seconds: float
    broker_down_seconds: float
    drain_seconds: float  # how long after the last 202 an email may take to reach the sink


FULL = Sizes(
    emails=5000, rate=100, cycles=20, smtp_down_seconds=30, broker_down_seconds=5, drain_seconds=180
)
QUICK = Sizes(
    emails=150, rate=50, cycles=2, smtp_down_seconds=3, broker_down_seconds=2, drain_seconds=60
)


class ChaosStack(PrivateStack):
    """One scenario's private stack, with retries and back-offs measured in seconds."""

    def __init__(self, name: str, run_dir: Path, bootstrap_servers: str, **overrides: str) -> None:
        self.scenario = name
        settings = {
            "WORKER_RETRY_SCHEDULE": CHAOS_RETRY_SCHEDULE,
            # A short back-off cap, so recovery is measured in seconds (the default is 30 s).
            "WORKER_RETRY_MAX_SECONDS": "2",
            **overrides,
        }
        super().__init__(f"chaos-{name}", run_dir, bootstrap_servers, **settings)
        self.max_worker_loop_lag_seconds = 0.0
        self._watching: asyncio.Task[None] | None = None

    async def up(self, workers: int = 1, console: bool = False) -> None:
        await super().up(workers, console)
        self._watching = asyncio.create_task(self._watch_worker_loop_lag())

    async def down(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        await super().down()

    async def _watch_worker_loop_lag(self) -> None:
        """The largest event-loop lag any worker reports, read every second from its /metrics
        (a SIGKILLed worker never logs its own)."""
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                for worker in self.workers(5):
                    if self.pid(worker) is None:
                        continue
                    metrics_url = worker.ready_url.removesuffix("/readyz") + "/metrics"
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        text = (await client.get(metrics_url)).text
                        found = LOOP_LAG_MAX.search(text)
                        if found:
                            lag = float(found.group(1))
                            self.max_worker_loop_lag_seconds = max(
                                self.max_worker_loop_lag_seconds, lag
                            )
                await asyncio.sleep(1)


LOOP_LAG_MAX = re.compile(r"^email_worker_event_loop_lag_max_seconds (\S+)$", re.MULTILINE)


@dataclass
class Traffic:
    """What the API answered: the ids it accepted (202) and when, and how often it said 503."""

    accepted: dict[str, float] = field(default_factory=dict)
    bounced: set[str] = field(default_factory=set)  # accepted, addressed to a 5xx recipient
    refused: set[Pair] = field(default_factory=set)  # recipients the sink never takes
    unavailable: int = 0
    replayed: int = 0  # 202s that were an earlier request's answer (Idempotent-Replayed)
    in_flight: int = 0  # 409s: the key's first request was still being answered
    unavailable_at: list[float] = field(default_factory=list)
    ids_by_key: dict[str, set[str]] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)  # message id -> its partition
    recipients: dict[str, list[str]] = field(default_factory=dict)  # message id -> its "to"
    attempted_at: list[float] = field(default_factory=list)  # every POST, retries included
    answers: list[tuple[float, float, int]] = field(default_factory=list)  # sent, answered, status
    unanswered: list[str] = field(default_factory=list)  # sent again with the same key
    errors: list[str] = field(default_factory=list)
    # message id -> (its first request left this client, its 202 arrived): retries included
    waited_for_202: dict[str, tuple[float, float]] = field(default_factory=dict)


CONNECTIONS = 500  # to the API, at most, over all the driver's pools
POOLS = 20


class Driver:
    """Sends emails through the API at a steady rate, as a careful client would: every request
    has an Idempotency-Key, and a 503 is retried with the same key."""

    def __init__(
        self,
        stack: ChaosStack,
        sizes: Sizes,
        rng: random.Random,
        extra_recipients: Callable[[int], list[str]] = lambda number: [],
        never_delivered: Callable[[str], bool] = lambda address: False,
    ) -> None:
        """`extra_recipients`: beside the usual one, email `number`'s; `never_delivered`: which
        of those the sink refuses for good, or for longer than the worker retries."""
        self.stack = stack
        self.sizes = sizes
        self.rng = rng
        self.extra_recipients = extra_recipients
        self.never_delivered = never_delivered
        self.traffic = Traffic()
        self.run_id = uuid.uuid4().hex[:8]

    def recipients(self, number: int, bounce: bool = False) -> list[str]:
        first = bouncing_recipient(number) if bounce else f"reader{number % 7}@example.com"
        return [first, *self.extra_recipients(number)]

    def email(self, number: int, bounce: bool = False) -> dict[str, Any]:
        return {
            "from": "Chaos <chaos@example.com>",
            "to": self.recipients(number, bounce),
            "subject": f"chaos {self.stack.scenario} #{number}",
            "text": f"email {number} of run {self.run_id}",
        }

    async def run(
        self,
        bounces: Callable[[int], bool] = lambda number: False,
        send_twice: bool = False,
        on_sent: Callable[[int], None] | None = None,
        until: asyncio.Event | None = None,
    ) -> Traffic:
        """Send the sizes' count of emails at its rate; or, given `until`, keep sending at that
        rate until it is set, however many that makes."""
        # Enough connections that no request waits in the client: answer times are the API's.
        # In small pools: httpcore matches queued requests to a pool's connections in
        # O(connections x requests) (encode/httpx#3215), and one pool of 500 with a storm of
        # retries queued held this client's event loop for 10-15 s at a time, which read as
        # the API's answer time.
        limits = httpx.Limits(max_connections=CONNECTIONS // POOLS)
        async with contextlib.AsyncExitStack() as clients:
            pools = [
                await clients.enter_async_context(httpx.AsyncClient(timeout=30, limits=limits))
                for _ in range(POOLS)
            ]
            started = time.monotonic()
            requests = []
            for number in itertools.count():
                finished = until.is_set() if until is not None else number >= self.sizes.emails
                if finished:
                    break
                await asyncio.sleep(max(0.0, started + number / self.sizes.rate - time.monotonic()))
                bounce = bounces(number)
                key = f"chaos-{self.run_id}-{number}"
                client = pools[number % POOLS]
                requests.append(asyncio.create_task(self.send(client, number, key, bounce)))
                if send_twice:  # the same key again, at once or a little later
                    delay = self.rng.choice([0.0, 0.0, 0.05, 0.5])
                    requests.append(
                        asyncio.create_task(self.send(client, number, key, bounce, delay))
                    )
                if on_sent is not None:
                    on_sent(number)
            await asyncio.gather(*requests)
        return self.traffic

    async def send(
        self, client: httpx.AsyncClient, number: int, key: str, bounce: bool, delay: float = 0.0
    ) -> None:
        await asyncio.sleep(delay)
        deadline = time.monotonic() + 120
        first_sent: float | None = None
        while time.monotonic() < deadline:
            self.traffic.attempted_at.append(time.time())
            sent = time.time()

            async def on_the_wire(event: str, info: dict[str, Any]) -> None:
                # Answer times are the API's: counted from when the request left this client,
                # not from when it began to wait for one of the client's connections.
                nonlocal sent
                if event == "http11.send_request_headers.started":
                    sent = time.time()

            try:
                response = await client.post(
                    f"{self.stack.api_url}/emails",
                    json=self.email(number, bounce),
                    headers={"Idempotency-Key": key},
                    extensions={"trace": on_the_wire},
                )
            except httpx.TransportError as error:
                first_sent = first_sent or sent
                # No answer at all, e.g. the API closed an idle keep-alive connection just as
                # this request went out on it. The request may or may not have been queued:
                # as a careful client, send it again with the same key.
                self.traffic.unanswered.append(f"#{number}: {error!r}")
                await asyncio.sleep(1)
                continue
            answered = time.time()
            self.traffic.answers.append((sent, answered, response.status_code))
            first_sent = first_sent or sent
            if response.status_code == 202:
                answer = response.json()
                if "Idempotent-Replayed" in response.headers:
                    # The first request's answer, byte for byte: counted when it came, unless
                    # it never came (that request got no answer, and this is it sent again).
                    self.traffic.replayed += 1
                    self.traffic.ids_by_key.setdefault(key, set()).add(answer["id"])
                    if answer["id"] in self.traffic.accepted:
                        return
                self.accepted(number, key, bounce, answer, (first_sent, answered))
                return
            if response.status_code == 409:
                # The first request with this key is still in flight: as a careful client,
                # ask again after Retry-After, and get its answer.
                self.traffic.in_flight += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", 1)))
                continue
            if response.status_code == 503:
                self.traffic.unavailable += 1
                self.traffic.unavailable_at.append(time.time())
                # As a careful client: wait as long as Retry-After says before trying again.
                await asyncio.sleep(float(response.headers.get("Retry-After", 1)))
                continue
            self.traffic.errors.append(f"#{number}: {response.status_code} {response.text}")
            return
        self.traffic.errors.append(f"#{number}: still unanswered or 503 after 120 s")

    def accepted(
        self,
        number: int,
        key: str,
        bounce: bool,
        answer: dict[str, Any],
        waited: tuple[float, float],
    ) -> None:
        """Note a 202: the message id, its place, whom it is for, and whom the sink refuses."""
        message_id = answer["id"]
        recipients = self.recipients(number, bounce)
        self.traffic.waited_for_202[message_id] = waited
        self.traffic.recipients[message_id] = recipients
        self.traffic.refused |= {
            pair(message_id, address)
            for address in recipients
            if is_bouncing(address) or self.never_delivered(address)
        }
        self.traffic.ids_by_key.setdefault(key, set()).add(message_id)
        self.traffic.partitions[message_id] = answer["partition"]
        self.traffic.accepted[message_id] = time.time()
        if bounce:
            self.traffic.bounced.add(message_id)


async def read_records(stack: ChaosStack, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic, from its beginning to its log end as reading began, with a
    consumer of no group: it commits nothing, so no group's position moves."""
    async with admin_client(stack.settings.kafka_bootstrap_servers) as admin:
        described = await admin.describe_topics([topic])
    partitions = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        log_end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if log_end[tp] > 0}
        async with asyncio.timeout(60):
            while remaining:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, batch in batches.items():
                    records += [record for record in batch if record.offset < log_end[tp]]
                    if batch and batch[-1].offset + 1 >= log_end[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return records


async def read_topic(stack: ChaosStack, topic: str) -> tuple[set[str], int, list[dict[str, str]]]:
    """(message ids, poison records, each record's headers) of a topic, with a fresh consumer."""
    ids: set[str] = set()
    poison = 0
    headers: list[dict[str, str]] = []
    for record in await read_records(stack, topic):
        headers.append({k: v.decode(errors="replace") for k, v in record.headers})
        try:
            ids.add(parse_record(record.value).message_id)
        except PoisonRecord:
            poison += 1
    return ids, poison, headers


async def read_events(stack: ChaosStack) -> EventLedger:
    """What email.events says, from its beginning: each distinct event, and each recipient's
    final events by (message id, recipient)."""
    records = await read_records(stack, stack.settings.events_topic)
    return ledger_of(record.value for record in records)


async def settled_events(stack: ChaosStack, traffic: Traffic, deadline: float) -> None:
    """Wait until every recipient of every accepted email has a final event and the retry
    group has committed every retry record, or until the deadline."""
    while time.monotonic() < deadline:
        events = await read_events(stack)
        if unsettled(events, traffic.recipients) == 0 and not await stack.retry_lag():
            return
        await asyncio.sleep(2)


@dataclass(frozen=True)
class EventsRead:
    """email.events and the retry group at the end of a scenario, against the 202s and the
    copies the sink stored."""

    ledger: EventLedger
    problems: EventProblems
    retry_lag: int | None  # None: the stack has no retry topics

    @property
    def passed(self) -> bool:
        return self.problems.count == 0 and not self.retry_lag

    def details(self) -> dict[str, Any]:
        return {
            "events_read": self.ledger.read,
            "event_copies": self.ledger.copies,
            "deferred_events": self.ledger.deferred_count,
            "event_problems": self.problems.details(),
            "retry_group_lag": self.retry_lag,
        }


async def read_events_against(
    stack: ChaosStack, traffic: Traffic, copies: dict[Pair, list[float]]
) -> EventsRead:
    ledger = await read_events(stack)
    problems = event_problems(ledger, traffic.recipients, copies.keys())
    return EventsRead(ledger, problems, await stack.retry_lag())


async def reconcile(
    stack: ChaosStack,
    traffic: Traffic,
    sizes: Sizes,
    fault_ends: list[float],
    expect_no_redelivery: bool = False,
    worker_kills: list[float] | None = None,
) -> Result:
    """Wait for the pipeline to drain, then compare what the API accepted, what the topic holds,
    what the sink stored and what email.events says."""
    expected = set(traffic.accepted) - traffic.bounced
    deadline = time.monotonic() + sizes.drain_seconds
    sink = await read_sink(stack)
    while time.monotonic() < deadline and any(sink.counts.get(i, 0) == 0 for i in expected):
        await asyncio.sleep(1)
        sink = await read_sink(stack)
    await settled_events(stack, traffic, max(deadline, time.monotonic() + EVENTS_GRACE_SECONDS))
    await asyncio.sleep(1)  # let the last commits land before counting redeliveries
    sink = await read_sink(stack)
    copies = recipient_copies(stack)
    events = await read_events_against(stack, traffic, copies)
    in_topic, _, _ = await read_topic(stack, stack.settings.email_topic)

    lost = sorted(i for i in expected if sink.counts.get(i, 0) == 0)
    duplicates = sum(count - 1 for count in sink.counts.values() if count > 1)
    bounced_delivered = sorted(i for i in traffic.bounced if sink.counts.get(i, 0))
    missing_in_topic = sorted(i for i in traffic.accepted if i not in in_topic)
    worker_logs = stack.worker_logs()
    redelivered = worker_logs.count("a duplicate (already")
    in_kill_window = by_email(
        kill_window_duplicates(copies, worker_kills or [], events.ledger), copies
    )
    recoveries = [
        first - end for end in fault_ends if (first := sink.first_stored_after(end)) is not None
    ]
    keys_with_two_ids = [key for key, ids in traffic.ids_by_key.items() if len(ids) > 1]
    passed = (
        not lost
        and not keys_with_two_ids
        and duplicates == sum(in_kill_window.values())
        and not missing_in_topic
        and not bounced_delivered
        and not traffic.errors
        and not (expect_no_redelivery and redelivered)
        and events.passed
    )
    return Result(
        scenario=stack.scenario,
        accepted=len(traffic.accepted),
        delivered=sum(1 for i in expected if sink.counts.get(i, 0)),
        lost=len(lost),
        duplicates=duplicates,
        redelivered=redelivered,
        recovery_seconds=max(recoveries) if recoveries else None,
        passed=passed,
        duplicates_in_kill_window=sum(in_kill_window.values()),
        events_wrong=events.problems.count,
        event_copies=events.ledger.copies,
        details={
            "kill_window_duplicates": sorted(in_kill_window)[:20],
            "unexplained_duplicates": sorted(
                i for i, c in sink.counts.items() if c > 1 and i not in in_kill_window
            )[:20],
            "lost_ids": lost[:20],
            "accepted_but_not_in_topic": missing_in_topic[:20],
            "bounced_but_delivered": bounced_delivered[:20],
            "api_503_answers": traffic.unavailable,
            "api_409_answers": traffic.in_flight,
            "api_replayed_answers": traffic.replayed,
            "idempotency_keys_with_two_ids": keys_with_two_ids[:20],
            "worker_kills": worker_kills or [],
            "client_errors": traffic.errors[:20],
            "unanswered_and_sent_again": traffic.unanswered[:20],
            "faults": len(fault_ends),
            "max_worker_loop_lag_ms": round(1000 * stack.max_worker_loop_lag_seconds),
            **events.details(),
        },
    )


async def reconcile_recipients(
    stack: ChaosStack,
    traffic: Traffic,
    sizes: Sizes,
    fault_ends: list[float],
    worker_kills: list[float],
) -> Result:
    """As `reconcile`, per recipient: every recipient of every accepted email has exactly one
    copy, though an email reaches its recipients in several transactions (some deferred), and
    the recipients the sink refuses have none."""
    expected = {
        pair(message_id, recipient)
        for message_id, recipients in traffic.recipients.items()
        for recipient in recipients
    } - traffic.refused
    deadline = time.monotonic() + sizes.drain_seconds
    copies = recipient_copies(stack)
    while time.monotonic() < deadline and not expected <= copies.keys():
        await asyncio.sleep(1)
        copies = recipient_copies(stack)
    await settled_events(stack, traffic, max(deadline, time.monotonic() + EVENTS_GRACE_SECONDS))
    await asyncio.sleep(1)  # let the last commits land before counting redeliveries
    copies = recipient_copies(stack)
    events = await read_events_against(stack, traffic, copies)
    in_topic, _, _ = await read_topic(stack, stack.settings.email_topic)

    lost = sorted(expected - copies.keys())
    refused_but_delivered = sorted(traffic.refused & copies.keys())
    duplicates = {
        recipient: len(arrivals) - 1 for recipient, arrivals in copies.items() if len(arrivals) > 1
    }
    worker_logs = stack.worker_logs()
    in_kill_window = kill_window_duplicates(copies, worker_kills, events.ledger)
    missing_in_topic = sorted(i for i in traffic.accepted if i not in in_topic)
    recoveries = [
        min(later) - end
        for end in fault_ends
        if (later := [a for arrivals in copies.values() for a in arrivals if a >= end])
    ]
    passed = (
        not lost
        and not refused_but_delivered
        and sum(duplicates.values()) == sum(in_kill_window.values())
        and not missing_in_topic
        and not traffic.errors
        and events.passed
    )
    return Result(
        scenario=stack.scenario,
        accepted=len(traffic.accepted),
        delivered=len(expected & copies.keys()),
        lost=len(lost),
        duplicates=sum(duplicates.values()),
        redelivered=worker_logs.count("a duplicate (already"),
        recovery_seconds=max(recoveries) if recoveries else None,
        passed=passed,
        duplicates_in_kill_window=sum(in_kill_window.values()),
        events_wrong=events.problems.count,
        event_copies=events.ledger.copies,
        details={
            "recipients_expected": len(expected),
            "recipients_refused": len(traffic.refused),
            "sent_to_the_still_owed_only": worker_logs.count("sending it to the"),
            "kill_window_duplicates": sorted(in_kill_window)[:20],
            "unexplained_duplicates": sorted(set(duplicates) - set(in_kill_window))[:20],
            "lost_ids": lost[:20],
            "refused_but_delivered": refused_but_delivered[:20],
            "accepted_but_not_in_topic": missing_in_topic[:20],
            "api_503_answers": traffic.unavailable,
            "worker_kills": worker_kills,
            "client_errors": traffic.errors[:20],
            "faults": len(fault_ends),
            "max_worker_loop_lag_ms": round(1000 * stack.max_worker_loop_lag_seconds),
            **events.details(),
        },
    )


def recipient_copies(stack: ChaosStack) -> dict[Pair, list[float]]:
    """(message id, recipient) -> when each copy reached the sink, from the envelopes it
    stored. Read from the sink's own SQLite file (read-only): its Mailpit-shaped API shows an
    email's headers, which are the same in every copy, not the envelope each copy went to."""
    suffix = f"@{stack.settings.message_id_domain}"
    database = f"file:{stack.settings.sink_db_path}?mode=ro"
    with contextlib.closing(sqlite3.connect(database, uri=True)) as db:
        rows = db.execute("SELECT message_id, rcpt_tos, created_ms FROM messages").fetchall()
    copies: dict[Pair, list[float]] = {}
    for message_id, rcpt_tos, created_ms in rows:
        for recipient in json.loads(rcpt_tos):
            copies.setdefault(pair(message_id.removesuffix(suffix), recipient), []).append(
                created_ms / 1000
            )
    return copies


def write_report(results: list[Result], path: Path, sizes: Sizes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"sizes": sizes.__dict__, "results": [result.__dict__ for result in results]},
            indent=2,
            default=str,
        )
    )
