"""POST /emails/batch with a fake queue: each email checked on its own, one result per email in
order, the valid ones produced together, and the status code the results make."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import pytest

from services.api import batch
from services.api.email_queue import KafkaUnavailable, Queued
from services.api.idempotency import BATCH_ROUTE, KEY_PATTERN, fingerprint
from shared.schema import EmailContent, EmailRecord, message_id_for
from shared.settings import Settings
from tests.unit.api.fakes import app_with_fakes
from tests.unit.api.key_store import MemoryKeyStore
from tests.unit.api.test_app import FakeEmailQueue, email


class TogetherQueue(FakeEmailQueue):
    """Acknowledges nothing until every email of the batch is being sent: a batch produced
    one email after the other would never finish."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.sending = 0
        self.all_sending = asyncio.Event()

    async def enqueue(self, record: EmailRecord) -> Queued:
        self.sending += 1
        if self.sending == self.expected:
            self.all_sending.set()
        async with asyncio.timeout(1):
            await self.all_sending.wait()
        return await super().enqueue(record)


class FlakyQueue(FakeEmailQueue):
    """Kafka does not acknowledge the emails with these subjects."""

    def __init__(self) -> None:
        super().__init__()
        self.unacknowledged = {"unacknowledged"}

    async def enqueue(self, record: EmailRecord) -> Queued:
        if record.subject in self.unacknowledged:
            self.attempted.append(record.message_id)
            raise KafkaUnavailable("Kafka did not acknowledge within 5 s")
        return await super().enqueue(record)


@pytest.fixture
def queue() -> FakeEmailQueue:
    return FakeEmailQueue()


def app_client(queue: FakeEmailQueue, **settings: Any) -> httpx.AsyncClient:
    app = app_with_fakes(Settings(_env_file=None, **settings), queue, MemoryKeyStore())  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


@pytest.fixture
async def client(queue: FakeEmailQueue) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(queue) as client:
        yield client


async def post_batch(
    client: httpx.AsyncClient, emails: list[Any], key: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post("/emails/batch", json=emails, headers=headers)


async def test_each_email_gets_its_result_in_order_and_the_valid_ones_are_queued(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    emails = [email(subject="first"), email(to=["ana"]), email(subject="third")]

    response = await post_batch(client, emails)

    assert response.status_code == 202
    first, invalid, third = response.json()["results"]
    assert first == {
        "index": 0,
        "status": "queued",
        "id": queue.records[0].message_id,
        "topic": "email.send",
        "partition": 1,
        "offset": 0,
    }
    assert invalid == {
        "index": 1,
        "status": "invalid",
        "errors": [
            {
                "field": "to[0]",
                "message": "'ana' is not a valid email address: An email address must have "
                "an @-sign.",
            }
        ],
    }
    assert third["index"] == 2
    assert third["status"] == "queued"
    assert [record.subject for record in queue.records] == ["first", "third"]


async def test_an_items_errors_have_the_shape_and_words_of_a_single_emails(
    client: httpx.AsyncClient,
) -> None:
    invalid = email(to=["ana"], subject="a\nb")
    single = await client.post("/emails", json=invalid)

    response = await post_batch(client, [invalid, email()])

    assert response.json()["results"][0]["errors"] == single.json()["errors"]


async def test_the_valid_emails_are_produced_together() -> None:
    queue = TogetherQueue(expected=3)
    async with app_client(queue) as client:
        response = await post_batch(client, [email(subject=f"#{n}") for n in range(3)])

    assert response.status_code == 202
    assert [result["status"] for result in response.json()["results"]] == ["queued"] * 3


async def test_no_valid_email_is_422_and_nothing_is_queued(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    response = await post_batch(client, [email(to=[]), {"subject": "no sender"}, "not an email"])

    assert response.status_code == 422
    results = response.json()["results"]
    assert [result["status"] for result in results] == ["invalid"] * 3
    assert results[2]["errors"][0]["field"] == "body"
    assert "no email in the batch was queued: 3 refused" in response.json()["detail"]
    assert queue.records == []


@pytest.mark.parametrize(("count", "reason"), [(0, "the batch is empty"), (101, "got 101")])
async def test_a_batch_of_no_email_or_more_than_100_is_422(
    client: httpx.AsyncClient, count: int, reason: str
) -> None:
    response = await post_batch(client, [email()] * count)

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"
    assert reason in response.json()["errors"][0]["message"]


async def test_a_batch_that_is_no_array_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/emails/batch", json=email())

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body"


async def test_each_email_is_held_to_the_api_s_bounds_for_one_email(queue: FakeEmailQueue) -> None:
    async with app_client(queue, api_max_body_bytes=1024, api_max_recipients=2) as client:
        response = await post_batch(
            client,
            [
                email(text="x" * 2000),
                email(to=["a@example.com", "b@example.com", "c@example.com"]),
                email(),
            ],
        )

    too_large, too_many, queued = response.json()["results"]
    assert response.status_code == 202
    assert too_large["status"] == "too_large"
    assert "larger than 1024 (API_MAX_BODY_BYTES)" in too_large["errors"][0]["message"]
    assert too_many["errors"] == [
        {"field": "to", "message": "at most 2 recipients in to, cc and bcc together, got 3"}
    ]
    assert queued["status"] == "queued"


async def test_every_email_too_large_for_the_topic_is_413(queue: FakeEmailQueue) -> None:
    queue.max_record_bytes = 300
    async with app_client(queue) as client:
        response = await post_batch(client, [email(text="x" * 400)] * 2)

    assert response.status_code == 413
    assert [result["status"] for result in response.json()["results"]] == ["too_large"] * 2


async def test_the_batch_body_has_its_own_limit(queue: FakeEmailQueue) -> None:
    async with app_client(queue, api_max_body_bytes=2048, api_max_batch_body_bytes=4096) as client:
        within = await post_batch(client, [email(text="x" * 1000)] * 3)
        over = await post_batch(client, [email(text="x" * 1000)] * 5)

    assert within.status_code == 202
    assert over.status_code == 413
    assert "4096 bytes (API_MAX_BATCH_BODY_BYTES)" in over.json()["detail"]


async def test_kafka_failing_for_one_email_is_503_naming_every_id() -> None:
    queue = FlakyQueue()
    emails = [email(subject="acknowledged"), email(subject="unacknowledged"), email(to=[])]
    async with app_client(queue) as client:
        response = await post_batch(client, emails, key="batch-7")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    queued, unconfirmed, invalid = response.json()["results"]
    assert queued["status"] == "queued"
    assert unconfirmed == {"index": 1, "status": "unconfirmed", "id": queue.attempted[-1]}
    assert invalid["status"] == "invalid"
    assert "retry the batch with the same Idempotency-Key" in response.json()["detail"]


async def test_a_retry_after_a_503_queues_the_same_ids_again() -> None:
    queue = FlakyQueue()
    emails = [email(subject="acknowledged"), email(subject="unacknowledged")]
    async with app_client(queue) as client:
        unavailable = await post_batch(client, emails, key="batch-7")
        queue.unacknowledged.clear()
        retried = await post_batch(client, emails, key="batch-7")

    assert unavailable.status_code == 503
    assert retried.status_code == 202
    ids = [result["id"] for result in retried.json()["results"]]
    assert ids == [result["id"] for result in unavailable.json()["results"]]
    assert [record.message_id for record in queue.records] == [ids[0], ids[0], ids[1]]


async def test_an_idempotency_key_covers_the_batch_as_a_whole(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    emails = [email(subject="first"), email(to=["ana"]), email(subject="third")]

    first = await post_batch(client, emails, key="batch-7")
    again = await post_batch(client, emails, key="batch-7")
    other = await post_batch(client, [email(subject="first")], key="batch-7")
    single = await client.post("/emails", json=emails[0], headers={"Idempotency-Key": "batch-7"})

    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == single.status_code == 422
    assert len(queue.records) == 2


async def test_item_ids_derive_from_the_key_the_batch_and_the_index(
    client: httpx.AsyncClient,
) -> None:
    emails = [email(subject="first"), email(subject="second")]

    response = await post_batch(client, emails, key="batch-7")

    canonical = [
        EmailContent.model_validate(item).model_dump(mode="json", by_alias=True) for item in emails
    ]
    batch_fingerprint = fingerprint(BATCH_ROUTE, canonical)
    assert [result["id"] for result in response.json()["results"]] == [
        message_id_for("batch-7", batch_fingerprint, index) for index in range(2)
    ]


def refused(index: int, status: Literal["invalid", "too_large"] = "invalid") -> batch.RefusedItem:
    return batch.RefusedItem(index=index, status=status, errors=[])


def queued(index: int) -> batch.QueuedItem:
    return batch.QueuedItem(index=index, id="m", topic="t", partition=0, offset=0)


@pytest.mark.parametrize(
    ("results", "status"),
    [
        ([queued(0), refused(1)], 202),
        ([refused(0), refused(1, "too_large")], 422),
        ([refused(0, "too_large"), refused(1, "too_large")], 413),
        ([queued(0), batch.UnconfirmedItem(index=1, id="m")], 503),
    ],
)
def test_the_results_make_the_status_code(results: list[batch.Result], status: int) -> None:
    assert batch.status_code(results) == status


async def test_the_openapi_describes_the_batch_and_every_answer_of_a_key(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    send, send_batch = schema["paths"]["/emails"]["post"], schema["paths"]["/emails/batch"]["post"]

    body = send_batch["requestBody"]["content"]["application/json"]["schema"]
    assert body["type"] == "array"
    assert (body["minItems"], body["maxItems"]) == (1, 100)
    assert "from" in body["items"]["properties"]
    for operation in (send, send_batch):
        assert {"202", "400", "409", "413", "422", "503"} <= set(operation["responses"])
        assert "Idempotent-Replayed" in operation["responses"]["202"]["headers"]
        assert "Retry-After" in operation["responses"]["409"]["headers"]
        assert "Retry-After" in operation["responses"]["503"]["headers"]
        [key] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert key["schema"]["pattern"] == KEY_PATTERN
