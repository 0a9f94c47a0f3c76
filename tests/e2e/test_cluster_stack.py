"""`make up BROKERS=3`, `make add-worker` and `make down` as a user runs them (`python -m
deploy.local`, as the Makefile does), in a private run directory on free ports: three nodes,
every partition with three replicas in sync and min.insync.replicas=2, a local PostgreSQL for
the workers; a second worker as if on another host, sharing only Kafka and PostgreSQL; emails
delivered once; and every process the stack started stopped by `down`."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]

from services.api.idempotency_store.contract import TABLE as KEYS_TABLE
from services.worker.dedupe.postgres import TABLE
from tests.conftest import free_port, run_stack_command, settings_for, stack_env
from tests.e2e.conftest import RunningStack, wait_until
from tests.e2e.test_pipeline import group_owners
from tests.kafka_tools import run_kafka_tool

START_SECONDS = 300  # three JVMs, PostgreSQL and four services on two cores


def cluster_env(run_dir: Path) -> dict[str, str]:
    first_port = free_port(span=6)  # node N: client port first + 2(N-1), controller the next
    return stack_env(
        run_dir,
        KAFKA_BROKERS="3",
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{first_port}",
        KAFKA_CONTROLLER_PORT=str(first_port + 1),
        DEDUPE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/dedupe",
    )


def servers(stack: RunningStack) -> str:
    """The three nodes' client ports, as `make up BROKERS=3` lists them to every service."""
    first = int(stack.env["KAFKA_BOOTSTRAP_SERVERS"].rpartition(":")[2])
    return ",".join(f"127.0.0.1:{port}" for port in (first, first + 2, first + 4))


def pids_started(run_dir: Path) -> dict[str, int]:
    """Every process the stack started, by its pid file: services and Kafka nodes (pids/),
    PostgreSQL (its own postmaster.pid)."""
    files = [*run_dir.glob("pids/*.pid"), run_dir / "postgres" / "data" / "postmaster.pid"]
    return {path.stem: int(path.read_text().split()[0]) for path in files}


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if b"=" in item)


def alive(pid: int) -> bool:
    """Running, or stopped and not yet reaped by whoever adopted it (a zombie is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def delivered_in_store(dedupe_url: str) -> int:
    connection = await asyncpg.connect(dedupe_url)
    try:
        count: int = await connection.fetchval(f"SELECT count(*) FROM {TABLE}")
    finally:
        await connection.close()
    return count


async def keys_in_store(store_url: str) -> list[str]:
    connection = await asyncpg.connect(store_url)
    try:
        rows = await connection.fetch(f"SELECT key FROM {KEYS_TABLE}")
    finally:
        await connection.close()
    return [row["key"] for row in rows]


def test_three_brokers_postgresql_and_a_worker_on_another_host() -> None:
    # Not under pytest's base temporary directory: only root may enter that one, and as root
    # the local PostgreSQL runs as the postgres user, which must reach its own directory.
    run_dir = Path(tempfile.mkdtemp(prefix="email-pipeline-cluster-stack-"))
    run_dir.chmod(0o755)  # mkdtemp's is the owner's alone
    env = cluster_env(run_dir)
    stack = RunningStack(env, settings_for(env))
    try:
        up = stack.command("up", timeout=START_SECONDS)
        assert "PostgreSQL is ready after" in up, up
        check_replication(stack)
        stack.command("add-worker")
        pids = pids_started(run_dir)
        check_another_host(stack, pids)

        queued = [stack.send(to=f"reader{n}@example.com")["id"] for n in range(6)]
        stack.wait_until_delivered(*queued)
        assert [stack.deliveries_of(message_id) for message_id in queued] == [1] * 6
        assert asyncio.run(delivered_in_store(env["DEDUPE_URL"])) == 6
        # The API keeps its Idempotency-Keys in the same PostgreSQL, for APIs on every host.
        assert environment_of(pids["api"])["API_STORE_URL"] == env["DEDUPE_URL"]
        stack.send(idempotency_key="cluster-key")
        assert asyncio.run(keys_in_store(env["DEDUPE_URL"])) == ["cluster-key"]

        stack.command("down")
        assert {"kafka-1", "kafka-2", "kafka-3", "postmaster", "worker", "worker-2"} <= set(pids)
        assert [name for name, pid in pids.items() if alive(pid)] == []
    finally:  # also after a failure: whatever did start is stopped
        run_stack_command("down", env)
        shutil.rmtree(run_dir, ignore_errors=True)


def check_replication(stack: RunningStack) -> None:
    """kafka-topics.sh --describe: three replicas of every partition, all in sync."""
    described = run_kafka_tool(
        "kafka-topics.sh", "--bootstrap-server", servers(stack), "--describe",
        "--topic", stack.settings.email_topic,
    )  # fmt: skip
    assert described.returncode == 0, described.stderr
    assert "ReplicationFactor: 3" in described.stdout
    assert "min.insync.replicas=2" in described.stdout
    isrs = re.findall(r"Isr: ([\d,]+)", described.stdout)
    assert len(isrs) == stack.settings.topic_partitions, described.stdout
    assert all(sorted(isr.split(",")) == ["1", "2", "3"] for isr in isrs), described.stdout


def check_another_host(stack: RunningStack, pids: dict[str, int]) -> None:
    """worker-2 has a run directory (store, logs) and a port of its own; the same Kafka and
    PostgreSQL as the first; and the two split the partitions."""
    first, second = environment_of(pids["worker"]), environment_of(pids["worker-2"])
    assert second["RUN_DIR"] == str(stack.settings.run_dir / "hosts" / "worker-2")
    assert first["RUN_DIR"] == str(stack.settings.run_dir / "hosts" / "worker")
    assert second["WORKER_PORT"] == str(stack.settings.worker_port + 1)
    assert first["KAFKA_BOOTSTRAP_SERVERS"] == second["KAFKA_BOOTSTRAP_SERVERS"] == servers(stack)
    assert first["DEDUPE_URL"] == second["DEDUPE_URL"] == stack.env["DEDUPE_URL"]
    wait_until(lambda: len(set(group_owners(stack).values())) == 2, 60, "the workers split")
