"""A real worker process toward a real Mailpit over STARTTLS and AUTH that does not know the
worker's password yet: every email is held (nothing sent, dead-lettered or committed), /readyz
says why, and once the server learns the password each email arrives exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from shared.kafka import admin_client
from shared.settings import Settings
from tests.mailpit import (
    auth_flags,
    mailpit_binary,
    make_certificate,
    running_mailpit,
    starttls_flags,
)
from tests.private_stack import PrivateStack

EMAILS = 12
USERNAME, PASSWORD = "worker", "s3cret-the-server-learns-later"
HOLD_SECONDS = 3.0  # several of the worker's tries (WORKER_RETRY_MAX_SECONDS=1), all refused


async def records_in(settings: Settings, topic: str) -> int:
    """How many records a topic holds (the sum of its partitions' log end offsets)."""
    async with admin_client(settings.kafka_bootstrap_servers) as admin:
        described = await admin.describe_topics([topic])
    partitions = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def readyz(stack: PrivateStack) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(stack.stack.worker(1).ready_url)
    return response.status_code, dict(response.json())


async def until(condition: Any, seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, failure
        await asyncio.sleep(0.2)


async def test_a_password_the_server_refuses_holds_every_email_until_it_accepts(
    kafka: Settings, tmp_path: Path
) -> None:
    binary, certificate = mailpit_binary(), make_certificate(tmp_path / "tls")
    mailpit_dir, auth_file = tmp_path / "mailpit", tmp_path / "mailpit-auth"
    old_password = auth_flags(auth_file, USERNAME, "the-password-before")
    with running_mailpit(
        binary, mailpit_dir, *starttls_flags(certificate), *old_password
    ) as before:
        ports = {"smtp_port": before.smtp_port, "http_port": before.http_port}
        stack = PrivateStack(
            f"credentials-{uuid.uuid4().hex[:6]}",
            tmp_path / "stack",
            kafka.kafka_bootstrap_servers,
            SMTP_PORT=str(before.smtp_port),
            SMTP_TLS="starttls",
            SMTP_USERNAME=USERNAME,
            SMTP_PASSWORD=PASSWORD,
            SMTP_CA_FILE=str(certificate.ca_file),
            WORKER_RETRY_INITIAL_SECONDS="0.2",
            WORKER_RETRY_MAX_SECONDS="1",
        )
        try:
            await stack.up_topics()
            await stack.start(stack.stack.worker(1))
            await stack.start(stack.stack.api())
            message_ids = []
            async with httpx.AsyncClient(timeout=15) as client:
                for n in range(EMAILS):
                    queued = await client.post(
                        f"{stack.api_url}/emails",
                        json={
                            "from": "demo@example.com",
                            "to": ["ana@example.com"],
                            "subject": f"held {n}",
                            "text": "hello",
                        },
                    )
                    assert queued.status_code == 202, queued.text
                    message_ids.append(queued.json()["id"])

            async def refused() -> bool:
                return (await readyz(stack))[0] == 503

            await until(refused, 20, "the worker stayed ready with a password refused")
            await asyncio.sleep(HOLD_SECONDS)
            status, held = await readyz(stack)

            assert status == 503
            assert held["status"] == (
                f"not ready: SMTP authentication refused by 127.0.0.1:{before.smtp_port} (535 "
                "5.7.8 Authentication credentials invalid); check SMTP_USERNAME/SMTP_PASSWORD"
            )
            assert held["configuration_fault"] == "authentication"
            assert before.total() == 0
            assert await records_in(stack.settings, stack.settings.dlq_topic) == 0
            assert await stack.lag() == EMAILS, "the group's committed offsets did not move"
            log = stack.worker_logs()
            assert log.count("ERROR   worker: SMTP configuration fault") == 1, log
            assert PASSWORD not in log

            # The server learns the password: same ports, same database, new auth file.
            before.stop()
            new_password = auth_flags(auth_file, USERNAME, PASSWORD)
            with running_mailpit(
                binary, mailpit_dir, *starttls_flags(certificate), *new_password, **ports
            ) as after:

                async def all_arrived() -> bool:
                    return after.total() >= EMAILS

                async def all_committed() -> bool:
                    return await stack.lag() == 0

                await until(all_arrived, 30, "the held emails did not arrive")
                await until(all_committed, 20, "the group did not commit past them")

                assert [
                    after.copies_of(f"{m}@{stack.settings.message_id_domain}") for m in message_ids
                ] == [1] * EMAILS
                assert after.total() == EMAILS, "nothing twice"
            assert await records_in(stack.settings, stack.settings.dlq_topic) == 0
            assert (await readyz(stack))[0] == 200
            log = stack.worker_logs()
            assert "the SMTP server accepts the worker's settings again" in log
            assert PASSWORD not in log
        finally:
            await stack.down()
