"""The fault scenarios on one broker: each starts its own stack, streams emails, injects its
fault while the stream runs, and reconciles what the API accepted with what the sink stored and
what email.events says."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer

from deploy.local.kafka import KafkaBroker
from deploy.local.kafka_cluster import KafkaCluster
from deploy.local.processes import wait_for_exit
from deploy.local.stack import Service
from services.smtp_sink.simulator.addresses import SIMULATOR_DOMAIN
from tests.chaos.event_ledger import expiry, never_deferred, pair
from tests.chaos.harness import (
    ChaosStack,
    Driver,
    Sizes,
    read_events,
    read_topic,
    reconcile,
    reconcile_recipients,
)
from tests.chaos.kill_window import first_try_interrupted
from tests.chaos.report import Result
from tests.private_stack import read_sink


@dataclass
class Run:
    broker: KafkaBroker
    run_dir: Path
    sizes: Sizes
    rng: random.Random
    # Three nodes for the cluster scenarios (tests/chaos/cluster_scenarios.py): started before
    # the first of them runs, never for a run that has none.
    cluster: KafkaCluster | None = None

    def stack(self, name: str, **overrides: str) -> ChaosStack:
        return ChaosStack(
            name, self.run_dir / name, self.broker.settings.kafka_bootstrap_servers, **overrides
        )

    def fault_moments(self, count: int) -> list[float]:
        """Seconds after the stream starts, spread at random over the time it takes."""
        duration = self.sizes.emails / self.sizes.rate
        return sorted(self.rng.uniform(0.1, duration) for _ in range(count))


async def with_faults(
    driver_run: Coroutine[object, object, object], faults: Callable[[], Awaitable[None]]
) -> None:
    """Run the stream and the faults side by side; both must finish, or neither goes on."""
    stream = asyncio.create_task(driver_run)
    try:
        await faults()
        await stream
    finally:
        stream.cancel()


# Roughly how long one cycle takes: a SIGKILLed member stays in the group until its session
# times out (10 s), so the restarted worker waits that long to get partitions again.
CYCLE_SECONDS = {False: 3.0, True: 12.0}


async def worker_cycles(run: Run, hard: bool) -> Result:
    stack = run.stack("hard-kills" if hard else "clean-restarts")
    await stack.up()
    # The stream lasts as long as the cycles, so that every fault happens during it.
    stream_seconds = run.sizes.cycles * CYCLE_SECONDS[hard]
    sizes = dataclasses.replace(
        run.sizes, rate=min(run.sizes.rate, run.sizes.emails / stream_seconds)
    )
    driver = Driver(stack, sizes, run.rng)
    fault_ends: list[float] = []
    kills: list[float] = []
    crashes: list[float] = []

    async def faults() -> None:
        for _ in range(run.sizes.cycles):
            fault_ends.append(await restart_worker(run, stack, hard, kills, crashes))

    try:
        await with_faults(driver.run(), faults)
        result = await reconcile(
            stack,
            driver.traffic,
            run.sizes,
            fault_ends,
            expect_no_redelivery=not hard,
            worker_kills=kills,
        )
        clean_stops = stack.worker_logs().count("worker: stopped")
        result.details |= {"worker_died_on_its_own": len(crashes), "clean_stops": clean_stops}
        result.passed = result.passed and not crashes and (hard or clean_stops >= run.sizes.cycles)
        return result
    finally:
        await stack.down()


async def restart_worker(
    run: Run,
    stack: ChaosStack,
    hard: bool,
    kills: list[float],
    crashes: list[float],
    worker: Service | None = None,
) -> float:
    """Stop the worker (the first, unless another is given) at a random moment of its life
    (SIGTERM, or SIGKILL if hard) and start it again; one found dead already counts as a
    crash. Returns when it was down."""
    worker = worker or stack.stack.worker()
    # A random moment in the worker's life, not the instant it joined the group.
    await asyncio.sleep(run.rng.uniform(0.2, 2.0))
    pid = stack.pid(worker)
    if pid is None:
        crashes.append(time.time())  # it died on its own: a defect, never a fault of ours
    elif hard:
        os.kill(pid, signal.SIGKILL)
        kills.append(time.time())
        await asyncio.to_thread(wait_for_exit, pid, 10)
    else:
        await stack.stop(worker)
    down = time.time()  # recovery counts from here
    await stack.start(worker)
    return down


GREY_DOMAIN = "grey.example.com"
GREYLIST_SECONDS = 3
GREYLISTING_RETRY_SCHEDULE = "2s,4s"  # tried at 0 s, 2 s (still greylisted) and 6 s


async def greylisting(run: Run) -> Result:
    """Every other email has one recipient the sink greylists (451 4.7.1 for its first
    GREYLIST_SECONDS) beside one it accepts, while the worker is stopped cleanly and SIGKILLed
    in turns: the greylisted recipient goes through the retry topics, and each recipient gets
    each email exactly once."""
    stack = run.stack(
        "greylisting",
        SINK_GREYLIST_DOMAINS=GREY_DOMAIN,
        SINK_GREYLIST_SECONDS=str(GREYLIST_SECONDS),
        WORKER_RETRY_SCHEDULE=GREYLISTING_RETRY_SCHEDULE,
    )
    await stack.up()
    cycles = max(2, run.sizes.cycles // 2)
    hard_cycles = [number % 2 == 1 for number in range(cycles)]
    # The stream lasts as long as the cycles, so that every fault happens during it.
    stream_seconds = sum(CYCLE_SECONDS[hard] for hard in hard_cycles)
    sizes = dataclasses.replace(
        run.sizes, rate=min(run.sizes.rate, run.sizes.emails / stream_seconds)
    )
    driver = Driver(
        stack,
        sizes,
        run.rng,
        extra_recipients=lambda number: [f"grey{number}@{GREY_DOMAIN}"] if number % 2 else [],
    )
    fault_ends: list[float] = []
    kills: list[float] = []
    crashes: list[float] = []

    async def faults() -> None:
        for hard in hard_cycles:
            fault_ends.append(await restart_worker(run, stack, hard, kills, crashes))

    try:
        await with_faults(driver.run(), faults)
        result = await reconcile_recipients(stack, driver.traffic, sizes, fault_ends, kills)
        result.details |= {"worker_died_on_its_own": len(crashes)}
        result.passed = result.passed and not crashes and result.details["deferred_events"] > 0
        return result
    finally:
        await stack.down()


async def broker_restarts(run: Run) -> Result:
    stack = run.stack("broker-restarts")
    await stack.up()
    driver = Driver(stack, run.sizes, run.rng)
    fault_ends: list[float] = []
    down_windows: list[tuple[float, float]] = []

    async def faults() -> None:
        started = time.monotonic()
        for moment, graceful in zip(run.fault_moments(2), (True, False), strict=True):
            await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
            if graceful:
                await asyncio.to_thread(run.broker.stop)
            else:
                pid = run.broker.process.running_pid()
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                await asyncio.to_thread(run.broker.process.stop, 10)  # reap it, clear the pid file
            gone = time.time()  # the broker process has exited: nothing can acknowledge now
            await asyncio.sleep(run.sizes.broker_down_seconds)
            down_windows.append((gone, time.time()))
            fault_ends.append(time.time())  # the broker is launched: recovery counts from here
            await asyncio.to_thread(run.broker.start)
            stored_before_the_end = await stack.stored_count()
            # The next fault only once the pipeline delivers again: a broker killed while the
            # API and worker are still reconnecting would make one long outage of the two.
            await stack.until_stored_more_than(stored_before_the_end, run.sizes.drain_seconds)

    try:
        await with_faults(driver.run(), faults)
        result = await reconcile(stack, driver.traffic, run.sizes, fault_ends)
        # A request sent while the broker is down is answered within the produce timeout: a 503,
        # or a 202 only once the broker is back (a 202 needs Kafka's ack). Never a hang, never a
        # 202 from nowhere. A 202 that reaches this client while the broker is down is for a
        # request sent before it went: Kafka acknowledged it before stopping.
        # The bound: the produce timeout, plus the time a request waits in a busy API.
        bound = 2 * stack.settings.api_produce_timeout_seconds + 2
        sent_while_down = [
            (answered - sent, status, answered > end)
            for sent, answered, status in driver.traffic.answers
            for start, end in down_windows
            if start < sent < end
        ]
        accepted_while_down = [a for a in sent_while_down if a[1] == 202 and not a[2]]
        misanswered = [a for a in sent_while_down if a[0] > bound or a[1] not in (202, 503)]
        result.details["accepted_while_broker_down"] = len(accepted_while_down)
        result.details["requests_while_broker_down"] = len(sent_while_down)
        result.details["503_while_broker_down"] = sum(1 for a in sent_while_down if a[1] == 503)
        result.details["slowest_answer_while_broker_down"] = max(
            (a[0] for a in sent_while_down), default=None
        )
        result.details["misanswered_while_broker_down"] = misanswered[:10]
        result.passed = result.passed and not accepted_while_down and not misanswered
        return result
    finally:
        await stack.down()


async def smtp_outage(run: Run) -> Result:
    stack = run.stack("smtp-outage")
    await stack.up()
    driver = Driver(stack, run.sizes, run.rng)
    fault_ends: list[float] = []
    max_lag = 0
    drain_seconds: float | None = None

    async def faults() -> None:
        nonlocal max_lag, drain_seconds
        await asyncio.sleep(run.fault_moments(1)[0] / 2)
        await stack.stop(stack.stack.sink())
        outage_ends = time.monotonic() + run.sizes.smtp_down_seconds
        while time.monotonic() < outage_ends:
            max_lag = max(max_lag, await stack.lag())
            await asyncio.sleep(0.5)
        fault_ends.append(time.time())  # the sink is launched: recovery counts from here
        await stack.start(stack.stack.sink())
        restarted = time.monotonic()
        while await stack.lag() > 0 and time.monotonic() - restarted < run.sizes.drain_seconds:
            max_lag = max(max_lag, await stack.lag())
            await asyncio.sleep(0.2)
        drain_seconds = time.monotonic() - restarted

    try:
        await with_faults(driver.run(), faults)
        result = await reconcile(stack, driver.traffic, run.sizes, fault_ends)
        worker = stack.stack.worker()
        result.details |= {
            "max_lag": max_lag,
            "drain_seconds": drain_seconds,
            "worker_alive_throughout": "stopped" not in stack.worker_logs(),
        }
        result.passed = result.passed and stack.pid(worker) is not None
        return result
    finally:
        await stack.down()


async def failover(run: Run) -> Result:
    stack = run.stack("scale-out-failover")
    await stack.up(workers=3)
    # The stream outlasts the kill and the 10 s the group takes to notice a silent member.
    sizes = dataclasses.replace(run.sizes, rate=min(run.sizes.rate, run.sizes.emails / 25))
    driver = Driver(stack, sizes, run.rng)
    fault_ends: list[float] = []
    assignment_before: dict[str, list[int]] = {}

    async def faults() -> None:
        # Three members each owning a partition: the group is stable.
        assignment_before.update(await settled_assignment(stack, lambda owners: len(owners) == 3))
        await asyncio.sleep(run.fault_moments(1)[0])
        victim = stack.stack.worker(2)
        pid = stack.pid(victim)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        fault_ends.append(time.time())
        await asyncio.to_thread(wait_for_exit, pid, 10)

    try:
        await with_faults(driver.run(), faults)
        result = await reconcile(stack, driver.traffic, run.sizes, [], worker_kills=fault_ends)
        every_partition = list(range(stack.settings.topic_partitions))
        after = await settled_assignment(
            stack, lambda owners: sorted(p for ps in owners.values() for p in ps) == every_partition
        )
        orphaned = set(assignment_before.get("worker-2", []))
        result.recovery_seconds = await first_delivery_on(stack, driver, orphaned, fault_ends[0])
        owned = sorted(p for partitions in after.values() for p in partitions)
        result.details |= {"assignment_before": assignment_before, "assignment_after": after}
        result.passed = (
            result.passed
            and len(assignment_before) == 3
            and "worker-2" not in after
            and owned == list(range(stack.settings.topic_partitions))
        )
        return result
    finally:
        await stack.down()


async def settled_assignment(
    stack: ChaosStack, settled: Callable[[dict[str, list[int]]], bool]
) -> dict[str, list[int]]:
    """The workers' assignment once `settled` holds (or as it is after 30 s)."""
    for _ in range(150):
        owners = await asyncio.to_thread(assignment, stack)
        if settled(owners):
            break
        await asyncio.sleep(0.2)
    return owners


async def first_delivery_on(
    stack: ChaosStack, driver: Driver, partitions: set[int], after: float
) -> float | None:
    """Seconds from `after` to the first email of these partitions that reached the sink."""
    sink = await read_sink(stack)
    arrivals = [
        min(sink.arrivals[message_id])
        for message_id, partition in driver.traffic.partitions.items()
        if partition in partitions and message_id in sink.arrivals
    ]
    later = [arrival - after for arrival in arrivals if arrival >= after]
    return min(later) if later else None


def assignment(stack: ChaosStack) -> dict[str, list[int]]:
    """Which worker owns which partitions, from each worker's /readyz."""
    import httpx

    owners: dict[str, list[int]] = {}
    for number in range(1, 6):
        worker = stack.stack.worker(number)
        if stack.pid(worker) is None:
            continue
        try:
            ready = httpx.get(worker.ready_url, timeout=2).json()
        except httpx.HTTPError:
            continue
        partitions = [int(name.rpartition("-")[2]) for name in ready.get("partitions", [])]
        if partitions:
            owners[worker.name] = partitions
    return owners


async def poison_and_bounce(run: Run) -> Result:
    stack = run.stack("poison-and-bounce")
    await stack.up()
    driver = Driver(stack, run.sizes, run.rng)
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap_servers)
    garbage = 0
    garbage_sends: list[asyncio.Future[object]] = []

    # 1 record in 50 is bad: every 100 emails, one bounce (a recipient the sink refuses with
    # 550 5.1.1, an address of its own each time) and one garbage.
    def bounces(number: int) -> bool:
        return number % 100 == 50

    def after_each(number: int) -> None:
        nonlocal garbage
        if number % 100 == 0:  # raw garbage, straight into the topic
            garbage += 1
            garbage_sends.append(
                asyncio.ensure_future(
                    producer.send_and_wait(
                        stack.settings.email_topic, f"garbage {number} \xff".encode()
                    )
                )
            )

    try:
        await producer.start()
        await driver.run(bounces=bounces, on_sent=after_each)
        await asyncio.gather(*garbage_sends)
        result = await reconcile(stack, driver.traffic, run.sizes, [])
        _, _, dead = await read_topic(stack, stack.settings.dlq_topic)
        expected_dead = garbage + len(driver.traffic.bounced)
        with_headers = [
            h for h in dead
            if {"dlq.original.topic", "dlq.original.partition", "dlq.original.offset",
                "dlq.error", "dlq.attempts"} <= set(h)
        ]  # fmt: skip
        lag = await stack.lag()
        result.details |= {
            "garbage_produced": garbage,
            "bounces_accepted": len(driver.traffic.bounced),
            "dead_letters": len(dead),
            "dead_letters_with_headers": len(with_headers),
            "lag_after_drain": lag,
        }
        result.passed = (
            result.passed
            and len(dead) >= expected_dead
            and len(with_headers) == len(dead)
            and lag == 0
        )
        return result
    finally:
        await producer.stop()
        await stack.down()


async def client_retries(run: Run) -> Result:
    stack = run.stack("client-retries")
    await stack.up()
    driver = Driver(stack, run.sizes, run.rng)
    try:
        await driver.run(send_twice=True)
        result = await reconcile(stack, driver.traffic, run.sizes, [])
        # Every email was sent twice with its key: the second request got the first one's
        # answer (after a 409 while the first was in flight), and no second record was written,
        # so the worker had no copy to skip.
        _, _, records = await read_topic(stack, stack.settings.email_topic)
        result.details["records_in_topic"] = len(records)
        result.passed = (
            result.passed
            and result.accepted == run.sizes.emails
            and driver.traffic.replayed == run.sizes.emails
            and len(records) == run.sizes.emails
            and result.redelivered == 0
        )
        return result
    finally:
        await stack.down()


RETRY_SCHEDULE = "2s,5s,10s"
MAX_RETRY_AGE_SECONDS = 40
KILL_EVERY_SECONDS = 8.0
DEFERRED_EVERY = 10  # one email in this many has a recipient the sink defers once
EXPIRING_EVERY = 50  # one in this many, a recipient it greylists longer than the age limit
# Far past the age limit and the whole scenario: the worker gives up on them first, always.
EXPIRING_GREYLIST_SECONDS = 3600


def retried_recipient(number: int) -> list[str]:
    """Beside email `number`'s usual recipient: one the sink defers once (450, then 250), or one
    it greylists until long after WORKER_MAX_RETRY_AGE, or none."""
    if number % EXPIRING_EVERY == 0:
        return [f"expiring{number}@{GREY_DOMAIN}"]
    if number % DEFERRED_EVERY == DEFERRED_EVERY // 2:
        return [f"deferred+{number}@{SIMULATOR_DOMAIN}"]
    return []


def is_expiring(address: str) -> bool:
    return address.endswith(f"@{GREY_DOMAIN}")


async def retry_under_kills(run: Run) -> Result:
    """Two workers, one of them SIGKILLed at random every KILL_EVERY_SECONDS and started again,
    while recipients wait in the retry topics: 1 in DEFERRED_EVERY emails has one the sink
    defers once, 1 in EXPIRING_EVERY one it greylists for longer than WORKER_MAX_RETRY_AGE.
    The kills go on until the last email accepted is older than that age, so they land while
    retry partitions are paused and retry records are in flight. Every recipient gets its
    email once (bar the SIGKILL instant), each has one final event, each deferred one at least
    one deferred event, and each expiring one ends bounced (expired), its email dead-lettered."""
    stack = run.stack(
        "retry-under-kills",
        WORKER_RETRY_SCHEDULE=RETRY_SCHEDULE,
        WORKER_MAX_RETRY_AGE=f"{MAX_RETRY_AGE_SECONDS}s",
        SINK_GREYLIST_DOMAINS=GREY_DOMAIN,
        SINK_GREYLIST_SECONDS=str(EXPIRING_GREYLIST_SECONDS),
    )
    await stack.up(workers=2)
    stream_seconds = max(3, run.sizes.cycles) * KILL_EVERY_SECONDS
    sizes = dataclasses.replace(
        run.sizes,
        rate=min(run.sizes.rate, run.sizes.emails / stream_seconds),
        drain_seconds=run.sizes.drain_seconds + MAX_RETRY_AGE_SECONDS,
    )
    driver = Driver(
        stack, sizes, run.rng, extra_recipients=retried_recipient, never_delivered=is_expiring
    )
    streamed = asyncio.Event()
    fault_ends: list[float] = []
    kills: list[float] = []
    outages: list[tuple[float, float]] = []  # (SIGKILL, a member of the group again)
    crashes: list[float] = []

    async def stream() -> None:
        try:
            await driver.run()
        finally:
            streamed.set()

    def retries_may_be_pending() -> bool:
        last_202 = max(driver.traffic.accepted.values(), default=0.0)
        return not streamed.is_set() or time.time() < last_202 + MAX_RETRY_AGE_SECONDS

    async def faults() -> None:
        while retries_may_be_pending():
            cycle_ends = time.monotonic() + KILL_EVERY_SECONDS
            victim = run.rng.choice(stack.workers(2))
            fault_ends.append(await restart_worker(run, stack, True, kills, crashes, worker=victim))
            if len(kills) > len(outages):
                outages.append((kills[-1], time.time()))
            await asyncio.sleep(max(0.0, cycle_ends - time.monotonic()))

    try:
        await with_faults(stream(), faults)
        result = await reconcile_recipients(stack, driver.traffic, sizes, fault_ends, kills)
        traffic = driver.traffic
        events = await read_events(stack)
        dead_ids, _, dead_letters = await read_topic(stack, stack.settings.dlq_topic)
        owed = [
            (message_id, address)
            for message_id, addresses in traffic.recipients.items()
            for address in addresses
        ]
        deferred = [pair(m, a) for m, a in owed if a.startswith("deferred+")]
        expiring = [pair(m, a) for m, a in owed if is_expiring(a)]
        undeferred = never_deferred(events, deferred)
        interrupted = [
            recipient
            for recipient in undeferred
            if (final := events.final_of(recipient)) is not None
            and final.type == "sent"
            and first_try_interrupted(
                traffic.waited_for_202[recipient[0]][0],
                final.at.timestamp(),
                final.attempt,
                outages,
            )
        ]
        unexplained = sorted(set(undeferred) - set(interrupted))
        ended = expiry(events, expiring, dead_ids)
        result.details |= {
            "worker_died_on_its_own": len(crashes),
            "kills": len(kills),
            "deferred_recipients": len(deferred),
            "deferred_without_a_deferred_event": unexplained[:20],
            "deferral_skipped_by_an_interrupted_first_try": interrupted[:20],
            "expiring_recipients": len(expiring),
            "not_expired": ended.not_expired[:20],
            "expired_without_dead_lettered_event": ended.not_dead_lettered[:20],
            "expired_missing_in_dlq": ended.missing_in_dlq[:20],
            "unexpected_in_dlq": ended.unexpected_in_dlq[:20],
            "dead_letter_records": len(dead_letters),
            "dead_lettered_emails": len(dead_ids),
            "summary": (
                f"{len(kills)} SIGKILLs; {len(deferred)} recipients deferred once, "
                f"{len(deferred) - len(undeferred)} with a deferred event "
                f"({len(interrupted)} more whose first try a kill cut off after the sink's "
                f"450); {len(expiring)} expiring, {len(dead_ids)} emails dead-lettered in "
                f"{len(dead_letters)} records"
            ),
        }
        result.passed = (
            result.passed
            and not crashes
            and bool(kills)
            and bool(deferred)
            and bool(expiring)
            and not unexplained
            and ended.count == 0
        )
        return result
    finally:
        await stack.down()


SCENARIOS: dict[str, Callable[[Run], Awaitable[Result]]] = {
    "clean-restarts": lambda run: worker_cycles(run, hard=False),
    "hard-kills": lambda run: worker_cycles(run, hard=True),
    "broker-restarts": broker_restarts,
    "smtp-outage": smtp_outage,
    "scale-out-failover": failover,
    "poison-and-bounce": poison_and_bounce,
    "client-retries": client_retries,
    "greylisting": greylisting,
    "retry-under-kills": retry_under_kills,
}
