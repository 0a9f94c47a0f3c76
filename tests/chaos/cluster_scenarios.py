"""The fault scenarios on three Kafka nodes (topics of three replicas, two in sync to acknowledge):
a partition leader SIGKILLed, two nodes down, a rolling restart, a worker's host lost, and
PostgreSQL restarted. Each streams emails through the API while its faults run, and reconciles
the API's 202s, the topic and the sink as the single-broker scenarios do."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deploy.local.cluster_plan import API_PRODUCE_TIMEOUT_SECONDS
from deploy.local.kafka_cluster import KafkaCluster
from deploy.local.processes import wait_for_exit
from deploy.local.stack import Service
from services.smtp_sink.simulator.addresses import SIMULATOR_DOMAIN
from tests.chaos.harness import (
    ChaosStack,
    Driver,
    Sizes,
    Traffic,
    reconcile,
    reconcile_recipients,
)
from tests.chaos.report import Result
from tests.chaos.scenarios import (
    Run,
    first_delivery_on,
    settled_assignment,
    with_faults,
)
from tests.postgres import private_postgres
from tests.private_cluster import partition_leaders, quorum_leader

# What `make up BROKERS=3` gives the services: every node to bootstrap from, topics of three
# replicas of which two must hold a record before the API's 202, an API that waits out a
# leader's failover, and each worker a run directory of its own, as if on a host of its own
# (deploy/local/stack.py).
ON_THE_CLUSTER = {
    "KAFKA_BROKERS": "3",
    "TOPIC_REPLICATION_FACTOR": "3",
    "TOPIC_MIN_INSYNC_REPLICAS": "2",
    "API_PRODUCE_TIMEOUT_SECONDS": str(API_PRODUCE_TIMEOUT_SECONDS),
}
# Three JVMs, the services and the client share two cores: a rate they all keep up with, so that
# the times measured are the faults', not a queue's. 25 a second still puts a 202 on each
# partition every 0.15 s or so: a produce gap is measured to a fraction of a second.
CLUSTER_RATE = 25.0
WHOLE_SECONDS = 90.0  # for a restarted node to be back in every ISR and the quorum
TAIL_SECONDS = 3.0  # the stream goes on this long after the last fault: writes resume
# In worker-host-lost, one email in this many has a recipient whose final reply the sink holds
# back SLOW_SECONDS.
SLOW_EVERY = 10
SLOW_SECONDS = 3


def cluster_sizes(run: Run) -> Sizes:
    return dataclasses.replace(run.sizes, rate=min(run.sizes.rate, CLUSTER_RATE))


async def on_the_cluster(run: Run, name: str, **overrides: str) -> tuple[KafkaCluster, ChaosStack]:
    """The cluster, whole again (a scenario before may have left a node down or behind), and a
    stack of this scenario's own on it."""
    cluster = run.cluster
    if cluster is None:
        raise RuntimeError(f"{name} runs on the three-node cluster, and this run has none")
    await asyncio.to_thread(cluster.start)
    await asyncio.to_thread(cluster.wait_until_whole, time.monotonic() + WHOLE_SECONDS)
    stack = ChaosStack(
        name, run.run_dir / name, cluster.bootstrap_servers, **ON_THE_CLUSTER, **overrides
    )
    return cluster, stack


async def stream_while(driver: Driver, faults: Callable[[], Awaitable[None]]) -> None:
    """Stream emails from before the first fault (once the pipeline delivers) until
    TAIL_SECONDS after the last: every fault happens under load, however long it takes."""
    done = asyncio.Event()

    async def faults_then_tail() -> None:
        await driver.stack.until_stored_more_than(0, 60)
        await faults()
        await asyncio.sleep(TAIL_SECONDS)
        done.set()

    await with_faults(driver.run(until=done), faults_then_tail)


async def restart_node(cluster: KafkaCluster, node_id: int) -> tuple[float, float]:
    """Start a node again and wait until every replica is in sync: (seconds until it was a
    live broker, seconds more until the cluster was whole)."""
    started = time.monotonic()
    await asyncio.to_thread(cluster.start_node, node_id)
    live = time.monotonic()
    await asyncio.to_thread(cluster.wait_until_whole, live + WHOLE_SECONDS)
    return live - started, time.monotonic() - live


def answer_bound(stack: ChaosStack) -> float:
    """As broker-restarts: the produce timeout, plus the time a request waits in a busy API."""
    return 2 * stack.settings.api_produce_timeout_seconds + 2


def misanswered(traffic: Traffic, bound: float) -> list[tuple[float, int]]:
    """Requests answered later than the bound, or with neither 202 nor 503: a hang, a 500."""
    return [
        (round(answered - sent, 2), status)
        for sent, answered, status in traffic.answers
        if answered - sent > bound or status not in (202, 503)
    ]


def produce_waits(
    traffic: Traffic, start: float, end: float, partitions: set[int] | None = None
) -> dict[str, Any]:
    """What the clients sending between `start` and `end` waited: the longest any request
    waited for its answer, the longest an email waited for its 202 (503s and Retry-After
    included), and the longest time between two consecutive 202s of one partition (of
    `partitions`, or of any)."""
    sent = [(s, a, status) for s, a, status in traffic.answers if start <= s <= end]
    waits_for_202 = [
        a - first for first, a in traffic.waited_for_202.values() if start <= first <= end
    ]
    by_partition: dict[int, list[float]] = {}
    for message_id, (_, answered) in traffic.waited_for_202.items():
        partition = traffic.partitions[message_id]
        if partitions is None or partition in partitions:
            by_partition.setdefault(partition, []).append(answered)
    gaps = []
    for answers in by_partition.values():
        answers.sort()
        gaps += [
            later - earlier
            for earlier, later in itertools.pairwise(answers)
            if later >= start and earlier <= end
        ]
    return {
        "requests": len(sent),
        "answered_503": sum(1 for _, _, status in sent if status == 503),
        "longest_answer_seconds": round(max((a - s for s, a, _ in sent), default=0.0), 2),
        "longest_wait_for_202_seconds": round(max(waits_for_202, default=0.0), 2),
        "longest_202_gap_seconds": round(max(gaps, default=0.0), 2),
    }


async def first_202_after(traffic: Traffic, moment: float, seconds: float) -> float | None:
    """When the first 202 answered after `moment` arrived; None if none within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        later = [answered for _, answered in traffic.waited_for_202.values() if answered > moment]
        if later:
            return min(later)
        await asyncio.sleep(0.1)
    return None


async def until_led_elsewhere(
    cluster: KafkaCluster, topic: str, partitions: set[int], node_id: int, seconds: float
) -> float | None:
    """Seconds until each of `partitions` has a leader other than `node_id`; None if not
    within `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        leaders = await partition_leaders(cluster, topic)
        if leaders and all(leaders.get(p, -1) not in (-1, node_id) for p in partitions):
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None


async def kill_a_partition_leader(
    run: Run, cluster: KafkaCluster, topic: str, quorum_leader_too: bool
) -> dict[str, Any]:
    """SIGKILL a node that leads a partition of `topic` (one that also leads the controller
    quorum, or one that does not, where the cluster has such a node), keep it down until its
    partitions have new leaders, start it again and wait until the cluster is whole."""
    leaders = await partition_leaders(cluster, topic) or {}
    quorum = await asyncio.to_thread(quorum_leader, cluster)
    leading = sorted({leader for leader in leaders.values() if leader > 0})
    wanted = [node for node in leading if (node == quorum) == quorum_leader_too]
    victim = run.rng.choice(wanted or leading)
    led = sorted(partition for partition, leader in leaders.items() if leader == victim)
    await asyncio.to_thread(cluster.kill_node, victim)
    killed_at = time.time()
    moved_seconds = await until_led_elsewhere(cluster, topic, set(led), victim, 60)
    await asyncio.sleep(1.0)  # the new leaders take the load a moment before the node returns
    restarted_at = time.time()
    live_seconds, in_sync_seconds = await restart_node(cluster, victim)
    return {
        "node": victim,
        "partitions_led": led,
        "led_the_quorum": victim == quorum,
        "leaders_moved_seconds": None if moved_seconds is None else round(moved_seconds, 2),
        "killed_at": killed_at,
        "restarted_at": restarted_at,
        "live_seconds": round(live_seconds, 1),
        "in_sync_seconds": round(in_sync_seconds, 1),
        "whole_at": time.time(),
    }


async def cluster_leader_kill(run: Run) -> Result:
    """The leader of a partition SIGKILLed under load and started again: in turns a node that
    does not lead the controller quorum and one that does. The produce gap is measured per
    kill, on the partitions the node led."""
    cluster, stack = await on_the_cluster(run, "cluster-leader-kill")
    await stack.up()
    driver = Driver(stack, cluster_sizes(run), run.rng)
    topic = stack.settings.email_topic
    kills: list[dict[str, Any]] = []

    async def faults() -> None:
        for number in range(max(2, run.sizes.cycles // 4)):
            await asyncio.sleep(run.rng.uniform(1.0, 3.0))
            kills.append(await kill_a_partition_leader(run, cluster, topic, number % 2 == 1))

    try:
        await stream_while(driver, faults)
        result = await reconcile(stack, driver.traffic, run.sizes, [])
        for kill in kills:
            # From a second before the kill: a request sent then may wait on the dead leader.
            window = (kill["killed_at"] - 1, kill["whole_at"])
            kill |= produce_waits(driver.traffic, *window, set(kill["partitions_led"]))
        # Recovery, here: how long the partitions of a killed leader took no write.
        result.recovery_seconds = max(kill["longest_202_gap_seconds"] for kill in kills)
        bound = answer_bound(stack)
        bad_answers = misanswered(driver.traffic, bound)
        result.details |= {
            "kills": kills,
            "answer_bound_seconds": bound,
            "misanswered": bad_answers[:10],
            "summary": "; ".join(describe_kill(kill) for kill in kills),
        }
        result.passed = (
            result.passed
            and not bad_answers
            and len(kills) >= 2
            and all(kill["leaders_moved_seconds"] is not None for kill in kills)
        )
        return result
    finally:
        await stack.down()


def describe_kill(kill: dict[str, Any]) -> str:
    role = "the quorum's leader too" if kill["led_the_quorum"] else "not the quorum's leader"
    moved = kill["leaders_moved_seconds"]
    return (
        f"node {kill['node']} SIGKILLed ({role}, leader of partition(s) "
        f"{kill['partitions_led']}): new leaders after "
        f"{'never' if moved is None else f'{moved:.1f} s'}, the longest gap between 202s of "
        f"its partitions {kill['longest_202_gap_seconds']:.1f} s, the longest answer "
        f"{kill['longest_answer_seconds']:.1f} s, the longest wait for a 202 (retries "
        f"included) {kill['longest_wait_for_202_seconds']:.1f} s, {kill['answered_503']} "
        f"answered 503; back in every ISR {kill['live_seconds'] + kill['in_sync_seconds']:.0f} s "
        "after its restart"
    )


async def cluster_two_down(run: Run) -> Result:
    """Two of the three nodes SIGKILLed at once under load, which also loses the controller
    quorum: every request answers 503 within the produce timeout, none 202, until one node
    returns; then writes resume; then the other returns too."""
    cluster, stack = await on_the_cluster(run, "cluster-two-down")
    await stack.up()
    driver = Driver(stack, cluster_sizes(run), run.rng)
    down_seconds = max(8.0, 3 * run.sizes.broker_down_seconds)  # over one produce timeout
    fault_ends: list[float] = []
    moments: dict[str, Any] = {}

    async def faults() -> None:
        await asyncio.sleep(run.rng.uniform(1.0, 3.0))
        victims = run.rng.sample([node.node_id for node in cluster.nodes], 2)
        for node_id in victims:
            await asyncio.to_thread(cluster.kill_node, node_id)
        moments["victims"] = victims
        moments["gone"] = time.time()  # both have exited: nothing can be acknowledged now
        await asyncio.sleep(down_seconds)
        moments["back"] = time.time()  # the first is launched: the window ends here
        fault_ends.append(moments["back"])
        await asyncio.to_thread(cluster.start_node, victims[0])
        moments["live"] = time.time()
        moments["resumed"] = await first_202_after(driver.traffic, moments["back"], 60)
        await restart_node(cluster, victims[1])

    try:
        await stream_while(driver, faults)
        result = await reconcile(stack, driver.traffic, run.sizes, fault_ends)
        bound = answer_bound(stack)
        gone, back = moments["gone"], moments["back"]
        sent_while_down = [
            (answered - sent, status, answered > back)
            for sent, answered, status in driver.traffic.answers
            if gone < sent < back
        ]
        accepted_while_down = [a for a in sent_while_down if a[1] == 202 and not a[2]]
        too_late = [a for a in sent_while_down if a[0] > bound or a[1] not in (202, 503)]
        bad_answers = misanswered(driver.traffic, bound)
        resumed = moments["resumed"]
        details = {
            "nodes_down": moments["victims"],
            "down_seconds": round(back - gone, 1),
            "requests_while_two_down": len(sent_while_down),
            "503_while_two_down": sum(1 for a in sent_while_down if a[1] == 503),
            "accepted_while_two_down": len(accepted_while_down),
            "accepted_once_one_was_back": sum(1 for a in sent_while_down if a[1] == 202),
            "slowest_answer_while_two_down": round(
                max((a[0] for a in sent_while_down), default=0), 2
            ),
            "answer_bound_seconds": bound,
            "misanswered_while_two_down": too_late[:10],
            "misanswered": bad_answers[:10],
            "writes_resumed_after_launch_seconds": None
            if resumed is None
            else round(resumed - back, 1),
            "writes_resumed_after_live_seconds": (
                None if resumed is None else round(resumed - moments["live"], 1)
            ),
        }
        details["summary"] = (
            f"nodes {details['nodes_down']} SIGKILLed for {details['down_seconds']:.0f} s: "
            f"{details['requests_while_two_down']} requests sent meanwhile, "
            f"{details['503_while_two_down']} answered 503 (the slowest in "
            f"{details['slowest_answer_while_two_down']:.1f} s; bound {bound:.0f} s), "
            f"{details['accepted_while_two_down']} 202 while two were down, "
            f"{details['accepted_once_one_was_back']} 202 once one was back; writes resumed "
            f"{details['writes_resumed_after_launch_seconds']} s after node "
            f"{details['nodes_down'][0]} was launched "
            f"({details['writes_resumed_after_live_seconds']} s after it was live); "
            f"{result.redelivered} records skipped as already delivered"
        )
        result.details |= details
        result.passed = (
            result.passed
            and bool(sent_while_down)
            and not accepted_while_down
            and not too_late
            and not bad_answers
            and resumed is not None
        )
        return result
    finally:
        await stack.down()


async def cluster_rolling_restart(run: Run) -> Result:
    """Every node stopped cleanly and started again in turn under load, the next only once
    every ISR is whole: what an upgrade does."""
    cluster, stack = await on_the_cluster(run, "cluster-rolling-restart")
    await stack.up()
    driver = Driver(stack, cluster_sizes(run), run.rng)
    steps: list[dict[str, Any]] = []
    roll: list[float] = []

    async def faults() -> None:
        roll.append(time.time())
        for _ in range(max(1, run.sizes.cycles // 10)):
            for node in cluster.nodes:
                await asyncio.sleep(1.0)
                stopping = time.monotonic()
                await asyncio.to_thread(cluster.stop_node, node.node_id)
                stop_seconds = time.monotonic() - stopping
                live_seconds, in_sync_seconds = await restart_node(cluster, node.node_id)
                steps.append(
                    {
                        "node": node.node_id,
                        "stop_seconds": round(stop_seconds, 1),
                        "live_seconds": round(live_seconds, 1),
                        "in_sync_seconds": round(in_sync_seconds, 1),
                    }
                )
        roll.append(time.time())

    try:
        await stream_while(driver, faults)
        result = await reconcile(stack, driver.traffic, run.sizes, [])
        bound = answer_bound(stack)
        bad_answers = misanswered(driver.traffic, bound)
        waits = produce_waits(driver.traffic, roll[0], roll[-1])
        # Recovery, here: the longest a partition took no write while the nodes restarted.
        result.recovery_seconds = waits["longest_202_gap_seconds"]
        result.details |= {
            "steps": steps,
            "roll_seconds": round(roll[-1] - roll[0], 1),
            **waits,
            "answer_bound_seconds": bound,
            "misanswered": bad_answers[:10],
            "summary": (
                f"{len(steps)} nodes restarted in turn in {roll[-1] - roll[0]:.0f} s (each: "
                + ", ".join(
                    f"{s['node']}: stop {s['stop_seconds']:.0f} s, live "
                    f"{s['live_seconds']:.0f} s, in sync {s['in_sync_seconds']:.0f} s"
                    for s in steps
                )
                + f"); meanwhile {waits['requests']} requests, {waits['answered_503']} answered "
                f"503, the longest answer {waits['longest_answer_seconds']:.1f} s, the longest "
                f"gap between 202s of a partition {waits['longest_202_gap_seconds']:.1f} s"
            ),
        }
        result.passed = result.passed and not bad_answers and len(steps) >= len(cluster.nodes)
        return result
    finally:
        await stack.down()


async def worker_host_lost(run: Run, shared_store: bool) -> Result:
    """Two workers as on two hosts, each with a run directory of its own; one is SIGKILLed and
    its run directory deleted, as when its host is lost, and the other takes its partitions.

    With the PostgreSQL store they share, the survivor skips what the lost host delivered.
    With `shared_store` false each has its own SQLite file instead: the control, which must
    send emails twice beyond the SIGKILL window, or the scenario proves nothing. One email in
    SLOW_EVERY has a recipient whose final reply the sink holds back SLOW_SECONDS, as a slow
    server does: meanwhile its partition's committed offset waits behind it and the other
    lanes deliver the emails after it, so the survivor reads seconds of delivered emails
    again, not only the last 0.1 s. (A deferred recipient would not do: it leaves for a retry
    topic, and the commit moves on at once.)"""
    name = "worker-host-lost" if shared_store else "worker-host-lost-sqlite-control"
    with contextlib.ExitStack() as servers:
        overrides = {"SINK_SIMULATOR_SLOW_SECONDS": str(SLOW_SECONDS)}
        if shared_store:
            overrides["DEDUPE_URL"] = servers.enter_context(private_postgres()).url
        _, stack = await on_the_cluster(run, name, **overrides)
        await stack.up(workers=2)
        try:
            return await lose_a_worker_host(run, stack, shared_store)
        finally:
            await stack.down()


async def lose_a_worker_host(run: Run, stack: ChaosStack, shared_store: bool) -> Result:
    driver = Driver(
        stack,
        cluster_sizes(run),
        run.rng,
        extra_recipients=lambda n: [f"slow+{n}@{SIMULATOR_DOMAIN}"] if n % SLOW_EVERY == 0 else [],
    )
    workers = {worker.name: worker for worker in stack.workers(2)}
    every_partition = list(range(stack.settings.topic_partitions))
    before: dict[str, list[int]] = {}
    kills: list[float] = []
    lost: list[Service] = []
    deleted: list[str] = []

    async def faults() -> None:
        before.update(await settled_assignment(stack, lambda owners: len(owners) == 2))
        # Long enough for slow emails to hold commits back (SLOW_SECONDS each).
        await asyncio.sleep(run.rng.uniform(SLOW_SECONDS, SLOW_SECONDS + 2))
        # The worker with more partitions: more of the emails read again are its.
        victim = workers[max(before, key=lambda owner: len(before[owner]))]
        pid = stack.pid(victim)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        kills.append(time.time())
        lost.append(victim)
        await asyncio.to_thread(wait_for_exit, pid, 10)
        deleted.extend(await asyncio.to_thread(lose_disk, Path(victim.env["RUN_DIR"])))
        await settled_assignment(
            stack, lambda owners: sorted(p for ps in owners.values() for p in ps) == every_partition
        )

    await stream_while(driver, faults)
    result = await reconcile_recipients(stack, driver.traffic, run.sizes, kills, kills)
    after = await settled_assignment(
        stack, lambda owners: sorted(p for ps in owners.values() for p in ps) == every_partition
    )
    victim = lost[0]
    owned = sorted(p for partitions in after.values() for p in partitions)
    took_over = victim.name not in after and owned == every_partition
    result.recovery_seconds = await first_delivery_on(
        stack, driver, set(before.get(victim.name, [])), kills[0]
    )
    beyond_window = result.duplicates - result.duplicates_in_kill_window
    d = result.details
    store = "a PostgreSQL store they share" if shared_store else "a SQLite file per host"
    result.details |= {
        "dedupe_store": store,
        "host_lost": victim.name,
        "deleted_from_its_run_dir": deleted,
        "assignment_before": before,
        "assignment_after": after,
        "duplicates_beyond_kill_window": beyond_window,
        "summary": (
            f"{victim.name} SIGKILLed and its run directory deleted, with {store}: "
            f"{result.redelivered} records read again were skipped as delivered, "
            f"{d['sent_to_the_still_owed_only']} sent to the recipients still owed only; "
            f"{beyond_window} copies sent twice beyond the SIGKILL window"
        ),
    }
    if shared_store:
        result.passed = result.passed and took_over
    else:
        # The control passes when it shows what the shared store prevents.
        result.passed = (
            took_over
            and result.lost == 0
            and beyond_window > 0
            and not d["accepted_but_not_in_topic"]
            and not d["client_errors"]
        )
    return result


def lose_disk(host_dir: Path) -> list[str]:
    """Delete a worker's run directory as its host's loss would: what it held (the control's
    SQLite file; nothing with PostgreSQL, which keeps the state elsewhere)."""
    held = sorted(str(path.relative_to(host_dir)) for path in host_dir.rglob("*"))
    shutil.rmtree(host_dir, ignore_errors=True)
    return held


async def postgres_restart(run: Run) -> Result:
    """PostgreSQL, the dedupe store two workers share, stopped and started again under load:
    nothing lost or sent twice, and the workers keep their partitions (no rebalance). Whether
    their /readyz said 503 meanwhile is recorded, not judged."""
    with private_postgres() as server:
        _, stack = await on_the_cluster(run, "postgres-restart", DEDUPE_URL=server.url)
        await stack.up(workers=2)
        driver = Driver(stack, cluster_sizes(run), run.rng)
        workers = stack.workers(2)
        outage_seconds = max(5.0, 3 * run.sizes.broker_down_seconds)
        fault_ends: list[float] = []
        states_before: dict[str, dict[str, Any] | None] = {}
        readyz = ReadyzSeen()

        async def faults() -> None:
            await settled_assignment(stack, lambda owners: len(owners) == 2)
            states_before.update({w.name: await stack.worker_state(w) for w in workers})
            for _ in range(max(1, run.sizes.cycles // 10)):
                await asyncio.sleep(run.rng.uniform(1.0, 3.0))
                await asyncio.to_thread(server.stop)
                await watch_readyz(workers, outage_seconds, readyz)
                fault_ends.append(time.time())  # PostgreSQL is launched: recovery counts from here
                await asyncio.to_thread(server.start)
                launched = time.monotonic()
                for worker in workers:
                    await ready_state(stack, worker)
                readyz.ready_again_seconds.append(round(time.monotonic() - launched, 1))
                stored_before = await stack.stored_count()
                await stack.until_stored_more_than(stored_before, run.sizes.drain_seconds)

        try:
            await stream_while(driver, faults)
            result = await reconcile(stack, driver.traffic, run.sizes, fault_ends)
            states_after = {w.name: await ready_state(stack, w) for w in workers}
            held = {
                name: same_membership(before, states_after[name])
                for name, before in states_before.items()
            }
            alive = all(stack.pid(worker) is not None for worker in workers)
            result.details |= {
                "outage_seconds": outage_seconds,
                "outages": len(fault_ends),
                "worker_states_before": states_before,
                "worker_states_after": states_after,
                "partitions_held_without_rebalance": held,
                "readyz_while_postgres_down": dict(readyz.statuses),
                "readyz_503_while_postgres_down": readyz.statuses["503"] > 0,
                "readyz_first_503_after_seconds": readyz.first_503_seconds,
                "readyz_ready_again_after_seconds": readyz.ready_again_seconds,
                "readyz_reasons": sorted(readyz.reasons)[:3],
                "summary": (
                    f"PostgreSQL stopped for {outage_seconds:.0f} s ({len(fault_ends)} time(s)): "
                    f"the workers held their partitions without a rebalance: {held}; their "
                    f"/readyz answered {dict(readyz.statuses)} meanwhile (503 recorded, not "
                    f"required), the first 503 {readyz.first_503_seconds} s after the stop, 200 "
                    f"again {readyz.ready_again_seconds} s after the start"
                ),
            }
            result.passed = result.passed and alive and bool(held) and all(held.values())
            return result
        finally:
            await stack.down()


def same_membership(before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
    """The same partitions, and not one rebalance more, by the worker's /readyz."""
    return (
        before is not None
        and after is not None
        and after["partitions"] == before["partitions"]
        and after["rebalances"] == before["rebalances"]
    )


@dataclass
class ReadyzSeen:
    """What the workers' /readyz said while the store was down, over every outage."""

    statuses: Counter[str] = field(default_factory=Counter)  # "200", "503", "no answer"
    reasons: set[str] = field(default_factory=set)  # the 503s' own words
    first_503_seconds: list[float | None] = field(default_factory=list)  # per outage
    ready_again_seconds: list[float] = field(default_factory=list)  # after each restart


async def watch_readyz(workers: list[Service], seconds: float, seen: ReadyzSeen) -> None:
    """Each worker's /readyz, four times a second for `seconds`."""
    started = time.monotonic()
    first_503: float | None = None
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() - started < seconds:
            for worker in workers:
                try:
                    response = await client.get(worker.ready_url)
                except httpx.HTTPError:
                    seen.statuses["no answer"] += 1
                    continue
                seen.statuses[str(response.status_code)] += 1
                if response.status_code == 503:
                    first_503 = first_503 or round(time.monotonic() - started, 2)
                    seen.reasons.add(str(response.json().get("status")))
            await asyncio.sleep(0.25)
    seen.first_503_seconds.append(first_503)


async def ready_state(stack: ChaosStack, worker: Service) -> dict[str, Any] | None:
    """The worker's /readyz once it says ready again (within 30 s), else None."""
    for _ in range(60):
        with contextlib.suppress(httpx.HTTPError):
            state = await stack.worker_state(worker)
            if state is not None:
                return state
        await asyncio.sleep(0.5)
    return None


CLUSTER_SCENARIOS: dict[str, Callable[[Run], Awaitable[Result]]] = {
    "cluster-leader-kill": cluster_leader_kill,
    "cluster-two-down": cluster_two_down,
    "cluster-rolling-restart": cluster_rolling_restart,
    "worker-host-lost": lambda run: worker_host_lost(run, shared_store=True),
    "worker-host-lost-sqlite-control": lambda run: worker_host_lost(run, shared_store=False),
    "postgres-restart": postgres_restart,
}
