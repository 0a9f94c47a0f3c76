"""The chaos harness: a private stack per scenario, a steady stream of emails through the API,
and the reconciliation of three independent records (the API's 202s, the topic, the sink)."""

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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from shared.kafka import admin_client
from shared.schema import PoisonRecord, parse_record
from tests.private_stack import PrivateStack, SinkRecord, read_sink

BOUNCING_RECIPIENT = "bounce@example.com"


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
    """One scenario's private stack, with one recipient the sink refuses for good."""

    def __init__(self, name: str, run_dir: Path, bootstrap_servers: str, **overrides: str) -> None:
        self.scenario = name
        super().__init__(
            f"chaos-{name}",
            run_dir,
            bootstrap_servers,
            SINK_FAIL_5XX_RECIPIENTS=BOUNCING_RECIPIENT,
            # A short back-off cap, so recovery is measured in seconds (the default is 30 s).
            WORKER_RETRY_MAX_SECONDS="2",
            **overrides,
        )
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
    bounced: set[str] = field(default_factory=set)  # accepted, addressed to the 5xx recipient
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
    ) -> None:
        self.stack = stack
        self.sizes = sizes
        self.rng = rng
        self.extra_recipients = extra_recipients
        self.traffic = Traffic()
        self.run_id = uuid.uuid4().hex[:8]

    def email(self, number: int, bounce: bool = False) -> dict[str, Any]:
        return {
            "from": "Chaos <chaos@example.com>",
            "to": [
                BOUNCING_RECIPIENT if bounce else f"reader{number % 7}@example.com",
                *self.extra_recipients(number),
            ],
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
            if response.status_code == 202 and "Idempotent-Replayed" in response.headers:
                # The first request's answer, byte for byte: it was counted when it came.
                self.traffic.replayed += 1
                self.traffic.ids_by_key.setdefault(key, set()).add(response.json()["id"])
                return
            if response.status_code == 202:
                message_id = response.json()["id"]
                self.traffic.waited_for_202[message_id] = (first_sent, answered)
                self.traffic.recipients[message_id] = [
                    BOUNCING_RECIPIENT if bounce else f"reader{number % 7}@example.com",
                    *self.extra_recipients(number),
                ]
                self.traffic.ids_by_key.setdefault(key, set()).add(message_id)
                self.traffic.partitions[message_id] = response.json()["partition"]
                self.traffic.accepted[message_id] = time.time()
                if bounce:
                    self.traffic.bounced.add(message_id)
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


async def read_topic(stack: ChaosStack, topic: str) -> tuple[set[str], int, list[dict[str, str]]]:
    """(message ids, poison records, each record's headers) of a topic, with a fresh consumer."""
    async with admin_client(stack.settings.kafka_bootstrap_servers) as admin:
        described = await admin.describe_topics([topic])
    partitions = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    ids: set[str] = set()
    poison = 0
    headers: list[dict[str, str]] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        log_end = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if log_end[tp] > 0}
        async with asyncio.timeout(60):
            while remaining:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, records in batches.items():
                    for record in records:
                        headers.append({k: v.decode(errors="replace") for k, v in record.headers})
                        try:
                            ids.add(parse_record(record.value).message_id)
                        except PoisonRecord:
                            poison += 1
                    if records and records[-1].offset + 1 >= log_end[tp]:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return ids, poison, headers


@dataclass
class Result:
    scenario: str
    accepted: int
    delivered: int
    lost: int
    duplicates: int
    redelivered: int
    recovery_seconds: float | None
    passed: bool
    # Duplicates a SIGKILL caused between the server's 250 and the dedupe write: the window no
    # system can close with a non-transactional SMTP server (docs/guarantees.md).
    duplicates_in_kill_window: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> str:
        recovery = "-" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f}s"
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{self.scenario:<{NAME_WIDTH}} {self.accepted:>8} {self.delivered:>9} {self.lost:>5} "
            f"{self.duplicates:>10} {self.duplicates_in_kill_window:>14} {self.redelivered:>11} "
            f"{recovery:>9}  {verdict}"
        )


NAME_WIDTH = len("worker-host-lost-sqlite-control")  # the longest scenario name
HEADER = (
    f"{'scenario':<{NAME_WIDTH}} {'accepted':>8} {'delivered':>9} {'lost':>5} "
    f"{'duplicates':>10} {'of which window':>14} {'redelivered':>11} {'recovery':>9}  result"
)
# The sink stores an email (with an fsync) before its 250; a kill up to this long after the
# stored copy's timestamp can still fall between the 250 and the worker's dedupe write.
KILL_WINDOW_SECONDS = 0.25


async def reconcile(
    stack: ChaosStack,
    traffic: Traffic,
    sizes: Sizes,
    fault_ends: list[float],
    expect_no_redelivery: bool = False,
    worker_kills: list[float] | None = None,
) -> Result:
    """Wait for the pipeline to drain, then compare what the API accepted, what the topic holds
    and what the sink stored."""
    expected = set(traffic.accepted) - traffic.bounced
    deadline = time.monotonic() + sizes.drain_seconds
    sink = await read_sink(stack)
    while time.monotonic() < deadline and any(sink.counts.get(i, 0) == 0 for i in expected):
        await asyncio.sleep(1)
        sink = await read_sink(stack)
    await asyncio.sleep(1)  # let the last commits land before counting redeliveries
    sink = await read_sink(stack)
    in_topic, _, _ = await read_topic(stack, stack.settings.email_topic)

    lost = sorted(i for i in expected if sink.counts.get(i, 0) == 0)
    duplicates = sum(count - 1 for count in sink.counts.values() if count > 1)
    bounced_delivered = sorted(i for i in traffic.bounced if sink.counts.get(i, 0))
    missing_in_topic = sorted(i for i in traffic.accepted if i not in in_topic)
    worker_logs = stack.worker_logs()
    redelivered = worker_logs.count("a duplicate (already")
    in_kill_window = kill_window_duplicates(sink, worker_logs, worker_kills or [])
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
    copy, though an email reaches its recipients in several transactions (some deferred)."""
    expected = {
        (message_id, recipient.lower())
        for message_id, recipients in traffic.recipients.items()
        for recipient in recipients
        if message_id not in traffic.bounced
    }
    deadline = time.monotonic() + sizes.drain_seconds
    copies = recipient_copies(stack)
    while time.monotonic() < deadline and not expected <= copies.keys():
        await asyncio.sleep(1)
        copies = recipient_copies(stack)
    await asyncio.sleep(1)  # let the last commits land before counting redeliveries
    copies = recipient_copies(stack)
    in_topic, _, _ = await read_topic(stack, stack.settings.email_topic)

    lost = sorted(expected - copies.keys())
    duplicates = {pair: len(arrivals) - 1 for pair, arrivals in copies.items() if len(arrivals) > 1}
    worker_logs = stack.worker_logs()
    in_kill_window = {
        pair: extra
        for pair, extra in duplicates.items()
        if f"for {pair[0]} failed (outcome unknown" not in worker_logs
        and sum(
            any(0 <= kill - arrival < KILL_WINDOW_SECONDS for kill in worker_kills)
            for arrival in sorted(copies[pair])[:-1]
        )
        == extra
    }
    missing_in_topic = sorted(i for i in traffic.accepted if i not in in_topic)
    recoveries = [
        min(later) - end
        for end in fault_ends
        if (later := [a for arrivals in copies.values() for a in arrivals if a >= end])
    ]
    passed = (
        not lost
        and sum(duplicates.values()) == sum(in_kill_window.values())
        and not missing_in_topic
        and not traffic.errors
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
        details={
            "recipients_expected": len(expected),
            "deferred_then_retried": worker_logs.count(" deferred for "),
            "sent_to_the_still_owed_only": worker_logs.count("sending it to the"),
            "kill_window_duplicates": sorted(in_kill_window)[:20],
            "unexplained_duplicates": sorted(set(duplicates) - set(in_kill_window))[:20],
            "lost_ids": lost[:20],
            "accepted_but_not_in_topic": missing_in_topic[:20],
            "api_503_answers": traffic.unavailable,
            "worker_kills": worker_kills,
            "client_errors": traffic.errors[:20],
            "faults": len(fault_ends),
            "max_worker_loop_lag_ms": round(1000 * stack.max_worker_loop_lag_seconds),
        },
    )


def recipient_copies(stack: ChaosStack) -> dict[tuple[str, str], list[float]]:
    """(message id, recipient) -> when each copy reached the sink, from the envelopes it
    stored. Read from the sink's own SQLite file (read-only): its Mailpit-shaped API shows an
    email's headers, which are the same in every copy, not the envelope each copy went to."""
    suffix = f"@{stack.settings.message_id_domain}"
    database = f"file:{stack.settings.sink_db_path}?mode=ro"
    with contextlib.closing(sqlite3.connect(database, uri=True)) as db:
        rows = db.execute("SELECT message_id, rcpt_tos, created_ms FROM messages").fetchall()
    copies: dict[tuple[str, str], list[float]] = {}
    for message_id, rcpt_tos, created_ms in rows:
        for recipient in json.loads(rcpt_tos):
            pair = (message_id.removesuffix(suffix), recipient.lower())
            copies.setdefault(pair, []).append(created_ms / 1000)
    return copies


def kill_window_duplicates(
    sink: SinkRecord, worker_logs: str, worker_kills: list[float]
) -> dict[str, int]:
    """Extra copies sent by a worker that was SIGKILLed before it could write them to the dedupe
    store (it logs 'delivered' only after that write): message id -> extra copies.

    Evidence for each extra copy, all required: the earlier copy reached the sink at most
    KILL_WINDOW_SECONDS before a kill (the SMTP exchange was still ending), no attempt at that
    email failed (so the worker did not send it again itself), and the workers logged exactly
    one 'delivered' for the email. A duplicate without all of it is a defect and fails.
    """
    delivered_lines = Counter(re.findall(r"delivered (\S+) to ", worker_logs))
    explained = {}
    for message_id, copies in sink.counts.items():
        if (
            copies < 2
            or delivered_lines[message_id] != 1
            or f"for {message_id} failed" in worker_logs
        ):
            continue
        arrivals = sorted(sink.arrivals[message_id])
        killed_right_after = [
            arrival
            for arrival in arrivals[:-1]  # the last copy is the one a worker logged
            if any(0 <= kill - arrival < KILL_WINDOW_SECONDS for kill in worker_kills)
        ]
        if len(killed_right_after) == copies - 1:
            explained[message_id] = copies - 1
    return explained


def write_report(results: list[Result], path: Path, sizes: Sizes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"sizes": sizes.__dict__, "results": [result.__dict__ for result in results]},
            indent=2,
            default=str,
        )
    )
