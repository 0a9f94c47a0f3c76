"""The benchmark's stages, each on a private stack of its own (fresh topic, group and sink
database) on the run's broker, so that no stage measures another's leftovers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from deploy.local.kafka import KafkaBroker
from deploy.local.processes import BackgroundProcess
from deploy.local.stack import Service
from services.worker.mime import render_email
from shared.schema import EmailRecord
from tests.bench.cpu import cpu_seconds, ms_per_email, sample_cpu
from tests.bench.http_load import Answer, post_many
from tests.bench.smtp_blast import blast
from tests.private_stack import PrivateStack, read_sink


@dataclass(frozen=True)
class Sizes:
    emails: int  # per throughput stage
    rate: float  # the offered rate of the latency stage, emails/s
    latency_seconds: float
    api_requests: int  # per API stage
    clients: int  # concurrent HTTP clients
    # The direct client tries each number of connections and keeps the best: the sink takes
    # more emails/s with more sessions at once (one fsync commits several), up to its limit.
    smtp_connections: tuple[int, ...]
    naive_emails: int  # the naive baseline is slow: a smaller backlog gives its rate
    versus_connections: tuple[int, ...]  # our sink against Mailpit, the same for both


FULL = Sizes(
    emails=20_000, rate=200, latency_seconds=30, api_requests=10_000, clients=32,
    smtp_connections=(8, 16, 32, 64, 128), naive_emails=2_000, versus_connections=(8, 32),
)  # fmt: skip
QUICK = Sizes(
    emails=300, rate=100, latency_seconds=2, api_requests=300, clients=8,
    smtp_connections=(4, 8), naive_emails=50, versus_connections=(8,),
)  # fmt: skip


def email_request(number: int, run_id: str) -> dict[str, Any]:
    """The benchmark's email: one recipient, a subject, a short text, as most transactional
    email is."""
    return {
        "from": "Bench <bench@example.com>",
        "to": [f"reader{number % 7}@example.com"],
        "subject": f"bench {run_id} #{number}",
        "text": f"Hello reader,\n\nthis is email {number} of benchmark run {run_id}.\n",
    }


def email_record(number: int, run_id: str) -> EmailRecord:
    return EmailRecord.model_validate(
        {
            **email_request(number, run_id),
            "message_id": str(uuid.uuid4()),
            "created_at": datetime.now(UTC),
        }
    )


@dataclass
class Timeline:
    """How many messages the sink held, sampled over time: throughput over time for the chart;
    and with each sample, the CPU time the stage's processes had used by then."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)

    def cpu_ms_per_email(self) -> dict[str, float]:
        return ms_per_email(self.samples, self.cpu)


@dataclass
class Bench:
    broker: KafkaBroker
    run_dir: Path
    sizes: Sizes
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    timelines: dict[str, Timeline] = field(default_factory=dict)

    def stack(
        self, name: str, bootstrap_servers: str | None = None, **overrides: str
    ) -> PrivateStack:
        """A private stack on the run's broker, or on the brokers `bootstrap_servers` lists."""
        return PrivateStack(
            f"bench-{name}", self.run_dir / name,
            bootstrap_servers or self.broker.settings.kafka_bootstrap_servers, **overrides,
        )  # fmt: skip

    def with_emails(self, emails: int) -> Bench:
        """This bench with another backlog size, its figures kept in the same places."""
        return dataclasses.replace(self, sizes=dataclasses.replace(self.sizes, emails=emails))

    def note_peak_rss(self, stack: PrivateStack, services: list[Service]) -> None:
        """Each process's peak resident memory so far (VmHWM), read before it stops."""
        for service in services:
            pid = stack.pid(service)
            if pid is None:
                continue
            kind = service.name.split("-")[0]  # worker-2 counts as a worker
            peak = peak_rss_of(pid)
            self.peak_rss_bytes[kind] = max(self.peak_rss_bytes.get(kind, 0), peak)

    @property
    def kafka_pid(self) -> int | None:
        return self.broker.process.running_pid()

    def pids(
        self, stack: PrivateStack, services: list[Service], kafka: bool = True
    ) -> dict[str, int]:
        """{"worker": pid, "kafka": pid, ...}: the processes whose CPU a stage reports."""
        pids = {service.name: self.pid_of(stack, service) for service in services}
        if kafka and self.kafka_pid is not None:
            pids["kafka"] = self.kafka_pid
        return pids

    @staticmethod
    def pid_of(stack: PrivateStack, service: Service) -> int:
        pid = stack.pid(service)
        if pid is None:
            raise RuntimeError(f"{stack.name}: {service.name} is not running")
        return pid

    async def until_stored(
        self,
        stack: PrivateStack,
        count: int,
        seconds: float,
        timeline: str | None = None,
        cpu_of: dict[str, int] | None = None,
    ) -> Timeline:
        """Sample the sink's count four times a second until it holds `count` messages, and the
        CPU time of the processes in `cpu_of` with each sample."""
        samples = Timeline()
        if timeline is not None:
            self.timelines[timeline] = samples
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(timeout=10) as client:
            while time.monotonic() < deadline:
                response = await client.get(
                    f"{stack.sink_url}/api/v1/messages", params={"limit": 1}
                )
                stored = int(response.json()["total"])
                samples.samples.append((time.time(), stored))
                if cpu_of:
                    samples.cpu.append(sample_cpu(cpu_of))
                if stored >= count:
                    return samples
                await asyncio.sleep(0.25)
        raise RuntimeError(
            f"{stack.name}: the sink holds {samples.samples[-1][1]} of {count} after {seconds} s"
        )


def peak_rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def sink_ceiling(bench: Bench) -> dict[str, Any]:
    """The sink alone, blasted by a direct SMTP client over several persistent connections:
    the best rate over the numbers of connections tried, each on a fresh sink. The client is the
    worker's own SMTP edge with nothing else to do, so that its CPU time per email is the floor
    the worker's is held to."""
    records = [email_record(n, bench.run_id) for n in range(bench.sizes.emails)]
    rates, client_ms, sink_ms = {}, {}, {}
    for connections in bench.sizes.smtp_connections:
        stack = bench.stack(f"ceiling-{connections}")
        sink = stack.stack.sink()
        # The very bytes the worker sends for these records.
        emails = [render_email(r, stack.settings.message_id_domain) for r in records]
        await stack.start(sink)
        try:
            sink_cpu = cpu_seconds(bench.pid_of(stack, sink))
            sent = await blast("127.0.0.1", stack.settings.sink_smtp_port, emails, connections)
            client_ms[connections] = sent.cpu_seconds * 1000 / sent.emails_timed
            await bench.until_stored(stack, len(emails), seconds=30)
            sink_cpu = cpu_seconds(bench.pid_of(stack, sink)) - sink_cpu
            sink_ms[connections] = sink_cpu * 1000 / len(emails)
            # By the sink's clock, first stored to last, as the backlog drain is timed.
            rates[connections] = (len(emails) - 1) / await first_to_last_stored(stack)
            bench.note_peak_rss(stack, [sink])
        finally:
            await stack.stop(sink)
    best = max(rates, key=lambda connections: rates[connections])
    return {
        "emails_per_second": rates[best],
        "connections": best,
        "emails_per_second_by_connections": rates,
        # The client's least over the connections tried: the strictest floor for the worker.
        "cpu_ms_per_email": {"client": min(client_ms.values()), "smtp_sink": sink_ms[best]},
        "client_cpu_ms_per_email_by_connections": client_ms,
    }


async def pipeline_through_api(bench: Bench) -> dict[str, Any]:
    """N emails through the API by concurrent clients, until the sink has stored them all."""
    stack = bench.stack("pipeline")
    await stack.up()
    try:
        count = bench.sizes.emails
        started = time.time()
        sending = asyncio.create_task(
            post_many(
                "127.0.0.1", stack.settings.api_port, "/emails", count, bench.sizes.clients,
                lambda n: (email_request(n, bench.run_id), {}),
            )
        )  # fmt: skip
        cpu_of = bench.pids(stack, [stack.stack.api(), stack.stack.worker(), stack.stack.sink()])
        timeline = await bench.until_stored(
            stack, count, seconds=count / 50 + 60, timeline="pipeline", cpu_of=cpu_of
        )
        answers = await sending
        refused = [a for a in answers if a.status != 202]
        if refused:
            raise RuntimeError(f"the API refused {len(refused)}: {refused[0].body[:200]!r}")
        seconds = time.time() - started
        bench.note_peak_rss(stack, [stack.stack.api(), stack.stack.worker(), stack.stack.sink()])
        return {
            "emails_per_second": count / seconds,
            "seconds": seconds,
            "cpu_ms_per_email": timeline.cpu_ms_per_email(),
        }
    finally:
        await stack.down()


async def preload(stack: PrivateStack, records: list[EmailRecord]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.settings.kafka_bootstrap_servers, linger_ms=5, acks="all"
    )
    await producer.start()
    try:
        sent = []
        for record in records:
            key, value = record.to_kafka()
            sent.append(await producer.send(stack.settings.email_topic, value, key=key))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def backlog_drain(bench: Bench) -> dict[str, Any]:
    """The worker alone on N records already in `email.send`: the rate from its first delivery
    to its last (start-up and the group join are the restart stage's business). Twice, on
    fresh stacks, keeping the better: the ceiling too is the best of its tries."""
    rates = [await drain_once(bench, f"backlog-{attempt}") for attempt in (1, 2)]
    cpu_each_run = [bench.timelines[f"backlog-{attempt}"].cpu_ms_per_email() for attempt in (1, 2)]
    best = max(rates)
    bench.timelines["drain"] = bench.timelines.pop(f"backlog-{rates.index(best) + 1}")
    return {
        "emails_per_second": best,
        "emails_per_second_each_run": rates,
        # Both runs', not the faster one's alone.
        "cpu_ms_per_email": {
            name: statistics.mean(run[name] for run in cpu_each_run) for name in cpu_each_run[0]
        },
        "cpu_ms_per_email_each_run": cpu_each_run,
    }


async def tls_drain(bench: Bench) -> dict[str, Any]:
    """The backlog drain with the worker on STARTTLS and AUTH, as toward a production relay:
    `make up`'s own TLS set-up (a local CA, the sink requiring STARTTLS and the user). Best of
    two, as the plain drain."""
    tls = {"SMTP_TLS": "starttls", "SMTP_USERNAME": "bench", "SMTP_PASSWORD": "bench-secret"}
    rates = [await drain_once(bench, f"tls-{attempt}", **tls) for attempt in (1, 2)]
    return {"emails_per_second": max(rates), "emails_per_second_each_run": rates}


async def drain_once(
    bench: Bench,
    name: str,
    bootstrap_servers: str | None = None,
    **overrides: str,
) -> float:
    """The worker's rate on a backlog of the stage size, by the sink's clock from its first
    delivery to its last; the CPU each process used meanwhile is on the timeline `name`."""
    stack = bench.stack(name, bootstrap_servers, **overrides)
    sink, worker = stack.stack.sink(), stack.stack.worker()
    await stack.up_topics()
    await stack.start(sink)
    try:
        count = bench.sizes.emails
        await preload(stack, [email_record(n, bench.run_id) for n in range(count)])
        await stack.start(worker)
        cpu_of = bench.pids(stack, [worker, sink], kafka=bootstrap_servers is None)
        await bench.until_stored(
            stack, count, seconds=count / 50 + 60, timeline=name, cpu_of=cpu_of
        )
        bench.note_peak_rss(stack, [worker, sink])
        return (count - 1) / await first_to_last_stored(stack)
    finally:
        await stack.down()


async def naive_baseline(bench: Bench) -> dict[str, float]:
    """tests/bench/naive_worker.py on a backlog of the same emails."""
    stack = bench.stack("naive")
    sink = stack.stack.sink()
    await stack.up_topics()
    await stack.start(sink)
    naive = BackgroundProcess(
        "naive-worker", stack.settings.run_dir, marker="-m tests.bench.naive_worker"
    )
    try:
        count = bench.sizes.naive_emails
        await preload(stack, [email_record(n, bench.run_id) for n in range(count)])
        argv = [sys.executable, "-m", "tests.bench.naive_worker", str(count)]
        await asyncio.to_thread(naive.start, argv, stack.env)
        await bench.until_stored(stack, count, seconds=count / 5 + 60)
        seconds = await first_to_last_stored(stack)
        return {"emails_per_second": (count - 1) / seconds, "seconds": seconds}
    finally:
        await asyncio.to_thread(naive.stop, 10)
        await stack.down()


async def first_to_last_stored(stack: PrivateStack) -> float:
    """Seconds from the first message the sink stored to the last, by its own clock."""
    stored_at = [at for arrivals in (await read_sink(stack)).arrivals.values() for at in arrivals]
    return max(max(stored_at) - min(stored_at), 1e-3)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def latency(bench: Bench) -> dict[str, Any]:
    """A steady offered rate through the API: from each 202 to the sink storing the email."""
    stack = bench.stack("latency")
    await stack.up()
    try:
        count = int(bench.sizes.rate * bench.sizes.latency_seconds)
        answers = await post_many(
            "127.0.0.1", stack.settings.api_port, "/emails", count, bench.sizes.clients,
            lambda n: (email_request(n, bench.run_id), {}), rate=bench.sizes.rate,
        )  # fmt: skip
        await bench.until_stored(stack, count, seconds=60)
        sink = await read_sink(stack)
        # From the request leaving the client (before the API's 202, so an upper bound) to the
        # sink's stored time rounded up to its next millisecond (it keeps milliseconds).
        sent = {answer_id(a): a.sent for a in answers if a.status == 202}
        latencies_ms = [
            (sink.arrivals[message_id][0] + 0.001 - sent_at) * 1000
            for message_id, sent_at in sent.items()
            if message_id in sink.arrivals
        ]
        bench.note_peak_rss(stack, [stack.stack.api(), stack.stack.worker(), stack.stack.sink()])
        return {
            "offered_per_second": bench.sizes.rate,
            "emails": len(latencies_ms),
            "p50_ms": statistics.median(latencies_ms),
            "p95_ms": percentile(latencies_ms, 0.95),
            "p99_ms": percentile(latencies_ms, 0.99),
            "max_ms": max(latencies_ms),
            "latencies_ms": latencies_ms,
        }
    finally:
        await stack.down()


def answer_id(answer: Answer) -> str:
    return str(json.loads(answer.body)["id"])


async def api_accept_rate(bench: Bench) -> dict[str, float]:
    """POST /emails with acks=all at N concurrent clients, against the same endpoint with
    ?dry_run=true: everything but the produce, the API's HTTP ceiling."""
    stack = bench.stack("api")
    await stack.up()
    try:
        results: dict[str, float] = {}
        for label, path in (("produce", "/emails"), ("http", "/emails?dry_run=true")):
            started = time.monotonic()
            answers = await post_many(
                "127.0.0.1", stack.settings.api_port, path, bench.sizes.api_requests,
                bench.sizes.clients, lambda n: (email_request(n, bench.run_id), {}),
            )  # fmt: skip
            seconds = time.monotonic() - started
            wrong = [a for a in answers if a.status not in (200, 202)]
            if wrong:
                raise RuntimeError(f"{path}: {len(wrong)} answered {wrong[0].status}")
            times_ms = [(a.answered - a.sent) * 1000 for a in answers]
            results |= {
                f"{label}_per_second": len(answers) / seconds,
                f"{label}_p50_ms": statistics.median(times_ms),
                f"{label}_p99_ms": percentile(times_ms, 0.99),
            }
        bench.note_peak_rss(stack, [stack.stack.api()])
        return results
    finally:
        await stack.down()


async def restart_resumption(bench: Bench) -> dict[str, float]:
    """Worker restart to its first delivery, on a live stream; then the time a group of two
    takes to rebalance when a second worker joins."""
    stack = bench.stack("restart")
    await stack.up()
    worker, second = stack.stack.worker(), stack.stack.worker(2)
    try:
        stream = asyncio.create_task(
            post_many(
                "127.0.0.1", stack.settings.api_port, "/emails", int(bench.sizes.rate * 20), 4,
                lambda n: (email_request(n, bench.run_id), {}), rate=bench.sizes.rate,
            )
        )  # fmt: skip
        await asyncio.sleep(2)
        await stack.stop(worker)
        await asyncio.sleep(1)
        stored_before = await stack.stored_count()
        restarted = time.time()
        await stack.start(worker)
        await stack.until_stored_more_than(stored_before, 30)
        restart_seconds = time.time() - restarted

        settled_seconds, held_seconds = await rebalance_to_two(stack, worker, second)
        stream.cancel()
        bench.note_peak_rss(stack, [worker, second])
        return {
            "restart_to_first_delivery_s": restart_seconds,
            "second_worker_start_to_both_owning_s": settled_seconds,
            "rebalance_held_first_worker_s": held_seconds,
        }
    finally:
        await stack.down()


async def rebalance_to_two(
    stack: PrivateStack, first: Service, second: Service
) -> tuple[float, float]:
    """Start a second worker. (seconds from its start until both own partitions, seconds the
    rebalance held the first one: from giving up its partitions to owning its new ones)."""
    before = await stack.worker_state(first)
    assert before is not None
    started = time.monotonic()
    await stack.start(second)
    deadline = started + 60
    while time.monotonic() < deadline:
        states = [await stack.worker_state(first), await stack.worker_state(second)]
        if all(state and state["partitions"] for state in states):
            assert states[0] is not None
            if states[0]["rebalances"] > before["rebalances"]:
                held = float(states[0]["last_rebalance_seconds"])
                return time.monotonic() - started, held
        await asyncio.sleep(0.02)
    raise RuntimeError("the group of two workers did not settle within 60 s")
