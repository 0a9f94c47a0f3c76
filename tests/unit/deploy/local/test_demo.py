"""`make demo` picks each email's Idempotency-Key so that the API gives it a message id on the
story's partition: the id the demo expects is the one the API answers."""

from __future__ import annotations

import httpx
from aiokafka.partitioner import murmur2

from deploy.local.demo import idempotency_key_on_partition, message_id_of
from shared.settings import Settings
from tests.unit.api.fakes import app_with_fakes
from tests.unit.api.key_store import MemoryKeyStore
from tests.unit.api.test_app import FakeEmailQueue, email


async def test_the_key_puts_the_email_on_the_partition_and_the_api_agrees() -> None:
    hello = email(subject="hello1")
    keys = [idempotency_key_on_partition(hello, "demo-run", partition, 3) for partition in range(3)]
    app = app_with_fakes(Settings(_env_file=None), FakeEmailQueue(), MemoryKeyStore())  # type: ignore[arg-type]

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        answers = [
            await client.post("/emails", json=hello, headers={"Idempotency-Key": key})
            for key in keys
        ]

    ids = [answer.json()["id"] for answer in answers]
    assert ids == [message_id_of(hello, key) for key in keys]
    assert [(murmur2(i.encode()) & 0x7FFFFFFF) % 3 for i in ids] == [0, 1, 2]
