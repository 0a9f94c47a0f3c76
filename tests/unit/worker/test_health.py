"""The worker's /readyz: ready once it is a member of the group, with the partitions it owns, and
not while the SMTP server refuses its settings or the dedupe store does not answer."""

from __future__ import annotations

import httpx
from aiokafka.structs import TopicPartition

from services.worker.assignment import Assignments
from services.worker.configuration_faults import ConfigurationFaults
from services.worker.health import OwnedPartitions, create_health_app
from services.worker.membership import GroupMembership
from services.worker.processor import AttemptCounts
from services.worker.store_outage import StoreOutage
from tests.unit.worker.fakes import FakeConsumer, FakeMailer, FakeOwnedPartitions
from tests.unit.worker.test_assignment import owned_partitions


def client(
    membership: GroupMembership,
    owned: OwnedPartitions,
    faults: ConfigurationFaults,
    store_outage: StoreOutage | None = None,
) -> httpx.AsyncClient:
    app = create_health_app(
        membership,
        owned,
        "email-send-group",
        faults,
        AttemptCounts(),
        store_outage or StoreOutage(),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w")


async def test_ready_only_once_a_member_of_the_group() -> None:
    membership, owned = GroupMembership(), FakeOwnedPartitions()
    async with client(membership, owned, ConfigurationFaults(1, 1)) as c:
        assert (await c.get("/healthz")).status_code == 200
        before = await c.get("/readyz")
        membership.joined = True
        owned.partitions = {TopicPartition("email.send", 2): object()}
        membership.rebalances, membership.last_rebalance_seconds = 1, 0.25
        after = await c.get("/readyz")

    assert before.status_code == 503
    assert before.json() == {"status": "not yet a member of email-send-group"}
    assert after.json() == {
        "status": "ready",
        "partitions": ["email.send-2"],
        "retry_partitions": [],
        "rebalances": 1,
        "last_rebalance_seconds": 0.25,
    }


async def test_not_ready_while_the_smtp_server_refuses_the_settings() -> None:
    membership, now = GroupMembership(), [100.0]
    membership.joined = True
    faults = ConfigurationFaults(1, 30, clock=lambda: now[0])
    reason = (
        "SMTP authentication refused by smtp.example.com:587 (535 5.7.8 Authentication "
        "credentials invalid); check SMTP_USERNAME/SMTP_PASSWORD"
    )
    async with client(membership, FakeOwnedPartitions(), faults) as c:
        faults.refused("authentication", reason)
        now[0] += 12
        refused = await c.get("/readyz")
        faults.accepted()
        accepted = await c.get("/readyz")

    assert refused.status_code == 503
    assert refused.json() == {
        "status": f"not ready: {reason}",
        "configuration_fault": "authentication",
        "for_seconds": 12.0,
    }
    assert accepted.status_code == 200


async def test_not_ready_while_the_dedupe_store_does_not_answer() -> None:
    membership, owned, now = GroupMembership(), FakeOwnedPartitions(), [100.0]
    membership.joined = True
    owned.partitions = {TopicPartition("email.send", 0): object()}
    outage = StoreOutage(clock=lambda: now[0])
    async with client(membership, owned, ConfigurationFaults(1, 1), outage) as c:
        outage.failed("ConnectionRefusedError: [Errno 111] Connect call failed")
        now[0] += 3
        away = await c.get("/readyz")
        outage.answered()
        back = await c.get("/readyz")

    assert away.status_code == 503
    assert away.json() == {
        "status": "not ready: the dedupe store does not answer (ConnectionRefusedError: "
        "[Errno 111] Connect call failed)",
        "for_seconds": 3.0,
    }
    assert back.status_code == 200
    assert back.json()["partitions"] == ["email.send-0"], "it held its partitions throughout"


async def test_ready_shows_the_partitions_of_email_send_and_of_the_retry_topics() -> None:
    membership = GroupMembership()
    membership.joined = True
    main = owned_partitions(FakeConsumer(), FakeMailer())
    retries = owned_partitions(FakeConsumer(), FakeMailer(), waits_until_due=True)
    main.start([TopicPartition("email.send", 1)])
    retries.start(
        [TopicPartition("email.send.retry-1m", 1), TopicPartition("email.send.retry-5m", 1)]
    )
    async with client(membership, Assignments(main, retries), ConfigurationFaults(1, 1)) as c:
        ready = await c.get("/readyz")
    await main.stop_all()
    await retries.stop_all()

    assert ready.json()["partitions"] == ["email.send-1"], "as kafka-consumer-groups.sh shows"
    assert ready.json()["retry_partitions"] == ["email.send.retry-1m-1", "email.send.retry-5m-1"]
