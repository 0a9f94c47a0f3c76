"""POST /emails with an Idempotency-Key, over HTTP with a fake queue and the memory key store:
every row of docs/api.md's table of answers."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from services.api.email_queue import Queued
from services.api.idempotent_requests import IdempotentRequests
from shared.schema import EmailRecord
from shared.settings import Settings
from tests.unit.api.fakes import app_with_fakes
from tests.unit.api.key_store import MemoryKeyStore
from tests.unit.api.test_app import FakeEmailQueue, email, email_id

DAY = 24 * 3600.0


class HeldQueue(FakeEmailQueue):
    """Kafka acknowledges only once the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.acknowledge = asyncio.Event()
        self.sending = asyncio.Event()

    async def enqueue(self, record: EmailRecord) -> Queued:
        self.sending.set()
        await self.acknowledge.wait()
        return await super().enqueue(record)


@pytest.fixture
def key_store() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def queue() -> FakeEmailQueue:
    return FakeEmailQueue()


@pytest.fixture
async def client(
    queue: FakeEmailQueue, key_store: MemoryKeyStore
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_with_fakes(Settings(_env_file=None), queue, key_store)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def send(client: httpx.AsyncClient, key: str, **fields: object) -> asyncio.Task[httpx.Response]:
    return asyncio.create_task(
        client.post("/emails", json=email(**fields), headers={"Idempotency-Key": key})
    )


async def test_the_same_key_and_body_again_replays_the_first_answer_byte_for_byte(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    first = await send(client, "order-42")
    again = await send(client, "order-42")

    assert first.status_code == again.status_code == 202
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(queue.records) == 1, "nothing was queued again"


async def test_the_same_body_in_another_spelling_is_the_same_request(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    first = await send(client, "order-42")
    spelled = await client.post(
        "/emails",
        content=b'{"text":"t", "subject":"s", "cc":[], "to":["ana@example.com"],'
        b' "from":"demo@example.com"}',
        headers={"Idempotency-Key": '"order-42"', "Content-Type": "application/json"},
    )

    assert spelled.status_code == 202
    assert spelled.headers["Idempotent-Replayed"] == "true"
    assert spelled.json()["id"] == first.json()["id"]
    assert len(queue.records) == 1


async def test_the_same_key_with_another_body_is_422_saying_so(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    """Before, this was a 202 whose email the worker then skipped as already delivered."""
    await send(client, "order-42")
    reused = await send(client, "order-42", subject="another email")

    assert reused.status_code == 422
    [error] = reused.json()["errors"]
    assert error["field"] == "Idempotency-Key"
    assert "already used with a different body" in error["message"]
    assert len(queue.records) == 1


async def test_a_retry_while_the_first_is_in_flight_is_409_with_retry_after(
    key_store: MemoryKeyStore,
) -> None:
    queue = HeldQueue()
    app = app_with_fakes(Settings(_env_file=None), queue, key_store)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        first = send(client, "order-42")
        await queue.sending.wait()
        concurrent = await send(client, "order-42")
        other_body = await send(client, "order-42", subject="another email")
        queue.acknowledge.set()
        answered = await first
        after = await send(client, "order-42")

    assert concurrent.status_code == 409
    assert concurrent.headers["Retry-After"] == "1"
    assert "still being answered" in concurrent.json()["detail"]
    assert other_body.status_code == 422, "a different body is refused even while in flight"
    assert answered.status_code == 202
    assert after.content == answered.content
    assert len(queue.records) == 1


async def test_after_a_503_a_retry_with_the_same_key_queues_the_same_message_id(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    queue.unavailable = True
    unavailable = await send(client, "order-42")
    reused = await send(client, "order-42", subject="another email")
    queue.unavailable = False
    retried = await send(client, "order-42")

    assert unavailable.status_code == 503
    assert reused.status_code == 422, "the key stays bound to the first body"
    assert retried.status_code == 202
    assert "Idempotent-Replayed" not in retried.headers
    assert queue.attempted == [email_id("order-42", email())] * 2
    assert retried.json()["id"] == email_id("order-42", email())


async def test_after_a_413_the_key_is_free_for_another_body(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    queue.max_record_bytes = 300
    too_large = await send(client, "order-42", text="x" * 400)
    smaller = await send(client, "order-42", text="shorter")

    assert too_large.status_code == 413
    assert smaller.status_code == 202
    assert queue.records[0].text == "shorter"


async def test_an_expired_key_is_a_new_key_and_another_body_a_new_email(
    client: httpx.AsyncClient, queue: FakeEmailQueue, key_store: MemoryKeyStore
) -> None:
    first = await send(client, "order-42")
    row = key_store.rows["order-42"]
    key_store.rows["order-42"] = dataclasses.replace(row, created_at=row.created_at - DAY)

    other = await send(client, "order-42", subject="another email")

    assert other.status_code == 202
    assert "Idempotent-Replayed" not in other.headers
    assert other.json()["id"] != first.json()["id"], "never skipped as the first one"
    assert other.json()["id"] == email_id("order-42", email(subject="another email"))
    assert len(queue.records) == 2


async def test_an_expired_key_with_the_same_body_is_the_same_email_again(
    client: httpx.AsyncClient, queue: FakeEmailQueue, key_store: MemoryKeyStore
) -> None:
    """Queued again with the same id: the worker's dedupe store skips it if it was sent."""
    first = await send(client, "order-42")
    row = key_store.rows["order-42"]
    key_store.rows["order-42"] = dataclasses.replace(row, created_at=row.created_at - DAY)

    again = await send(client, "order-42")

    assert again.status_code == 202
    assert "Idempotent-Replayed" not in again.headers
    assert [record.message_id for record in queue.records] == [first.json()["id"]] * 2


async def test_a_claim_left_in_flight_by_a_dead_api_process_is_taken_over(
    client: httpx.AsyncClient,
    queue: FakeEmailQueue,
    key_store: MemoryKeyStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await send(client, "order-42")
    row = key_store.rows["order-42"]
    # As if its API process died after claiming it: in flight for 2 x 5 s (its produce timeout).
    key_store.rows["order-42"] = dataclasses.replace(
        row, state="in_flight", claimed_at=row.claimed_at - 10, status=None, body=None
    )

    with caplog.at_level(logging.WARNING, logger="api.idempotency"):
        taken_over = await send(client, "order-42")

    assert taken_over.status_code == 202
    assert [record.message_id for record in queue.records] == [taken_over.json()["id"]] * 2
    assert "took over an Idempotency-Key claimed 10 s ago" in caplog.text


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("x" * 257, "has 257 characters, at most 256"),
        ("order 42", "holds a space"),
        ('"bad\\q"', "with the escape \\q"),
    ],
)
async def test_an_invalid_key_is_400_naming_the_header(
    client: httpx.AsyncClient, queue: FakeEmailQueue, header: str, reason: str
) -> None:
    response = await client.post("/emails", json=email(), headers={"Idempotency-Key": header})

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "Idempotency-Key"
    assert reason in error["message"]
    assert response.json()["detail"].startswith("Idempotency-Key: ")
    assert queue.records == []


async def test_a_key_of_256_characters_is_accepted(client: httpx.AsyncClient) -> None:
    response = await send(client, "k" * 256)

    assert response.status_code == 202


async def test_a_dry_run_claims_nothing(
    client: httpx.AsyncClient, queue: FakeEmailQueue, key_store: MemoryKeyStore
) -> None:
    checked = await client.post(
        "/emails", params={"dry_run": "true"}, json=email(), headers={"Idempotency-Key": "k-1"}
    )
    sent = await send(client, "k-1", subject="not the dry run's body")

    assert checked.status_code == 200
    assert checked.json()["id"] == email_id("k-1", email())
    assert sent.status_code == 202, "the key was still free"
    assert key_store.rows["k-1"].state == "done"


async def test_without_the_key_store_a_request_with_a_key_is_503_and_one_without_goes_on(
    client: httpx.AsyncClient, queue: FakeEmailQueue, key_store: MemoryKeyStore
) -> None:
    key_store.unavailable = True

    with_key = await send(client, "order-42")
    without_key = await client.post("/emails", json=email())

    assert with_key.status_code == 503
    assert with_key.headers["Retry-After"] == "5"
    assert "cannot check the Idempotency-Key: the test's store is away" in with_key.text
    assert "Nothing was queued" in with_key.text
    assert without_key.status_code == 202
    assert len(queue.records) == 1


async def test_an_answer_the_store_could_not_keep_is_still_given(
    queue: FakeEmailQueue, key_store: MemoryKeyStore
) -> None:
    """The email is queued: the client gets its 202, and a retry gets 409 until the claim is
    taken over, then the same message id again, which the worker skips."""

    class FailingFinish(MemoryKeyStore):
        async def finish(self, key: str, claim: str, status: int, body: bytes) -> None:
            self.unavailable = True
            self._check()

    store = FailingFinish()
    app = app_with_fakes(Settings(_env_file=None), queue, store)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        answered = await send(client, "order-42")

    assert answered.status_code == 202
    assert store.rows["order-42"].state == "in_flight"


async def test_the_lifespan_opens_prunes_and_closes_the_store(key_store: MemoryKeyStore) -> None:
    app = app_with_fakes(Settings(_env_file=None), FakeEmailQueue(), key_store)  # type: ignore[arg-type]
    requests: IdempotentRequests = app.state.idempotent_requests
    await key_store.claim("expired", "fp", "c", 1.0)  # 1970

    async with app.router.lifespan_context(app):
        await asyncio.sleep(0.01)
        assert key_store.opened
        assert "expired" not in key_store.rows, "pruned at start"

    assert key_store.closed
    assert requests.store is key_store
