"""The API's HTTP behaviour with a fake queue: answers, error shapes, the body limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from email_validator import ValidatedEmail, validate_email

from services.api.email_queue import EmailQueue, EmailTooLarge, KafkaUnavailable, Queued
from services.api.errors import field_name
from services.api.idempotency import email_fingerprint
from shared import schema
from shared.events import ProducerRecord
from shared.schema import EmailContent, EmailRecord, message_id_for
from shared.settings import Settings
from tests.unit.api.fakes import app_with_fakes
from tests.unit.api.key_store import MemoryKeyStore
from tests.unit.api.producers import Producers
from tests.unit.worker.largest_email import largest_email


class FakeEmailQueue:
    def __init__(self, unavailable: bool = False, max_record_bytes: int = 1_048_576) -> None:
        self.unavailable = unavailable
        self.max_record_bytes = max_record_bytes
        self.records: list[EmailRecord] = []
        self.attempted: list[str] = []  # the message id of every record it was asked to queue
        self.events: list[ProducerRecord] = []  # produced to the events topic

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def kafka_record(self, record: EmailRecord) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        key, value = record.to_kafka()
        if len(value) > self.max_record_bytes:
            raise EmailTooLarge(f"the email is too large: {len(value)} bytes")
        return key, value, []

    async def enqueue(self, record: EmailRecord) -> Queued:
        self.attempted.append(record.message_id)
        self.kafka_record(record)
        if self.unavailable:
            raise KafkaUnavailable("Kafka did not acknowledge within 5 s")
        self.records.append(record)
        return Queued("email.send", 1, len(self.records) - 1)

    async def not_ready_reason(self) -> str | None:
        return "not connected to Kafka" if self.unavailable else None

    def publish_event(self, event: ProducerRecord) -> None:
        self.events.append(event)


async def default_topic_configs(bootstrap_servers: str, topic: str) -> dict[str, str]:
    """What a broker with Kafka's defaults answers for a topic's settings."""
    return {"max.message.bytes": "1048588", "retention.ms": "604800000"}


def email(**fields: Any) -> dict[str, Any]:
    return {
        "from": "demo@example.com",
        "to": ["ana@example.com"],
        "subject": "s",
        "text": "t",
        **fields,
    }


def email_id(key: str, body: dict[str, Any]) -> str:
    """The message id POST /emails gives `body` sent with Idempotency-Key `key`."""
    return message_id_for(key, email_fingerprint(EmailContent.model_validate(body)))


@pytest.fixture
def queue() -> FakeEmailQueue:
    return FakeEmailQueue()


@pytest.fixture
async def client(queue: FakeEmailQueue) -> AsyncIterator[httpx.AsyncClient]:
    app = app_with_fakes(Settings(_env_file=None, api_max_body_bytes=4096), queue, MemoryKeyStore())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def test_a_queued_email_answers_202_with_where_it_is(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    response = await client.post("/emails", json=email(), headers={"Idempotency-Key": "order-42"})

    assert response.status_code == 202
    assert response.json() == {
        "id": email_id("order-42", email()),
        "status": "queued",
        "topic": "email.send",
        "partition": 1,
        "offset": 0,
    }
    [record] = queue.records
    assert record.message_id == email_id("order-42", email())
    assert record.to == ["ana@example.com"]
    assert record.created_at.tzinfo is not None


async def test_a_dry_run_checks_the_email_and_queues_nothing(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    valid = await client.post(
        "/emails", params={"dry_run": "true"}, json=email(), headers={"Idempotency-Key": "k-1"}
    )
    invalid = await client.post("/emails", params={"dry_run": "true"}, json=email(to=[]))

    assert valid.status_code == 200
    assert valid.json() == {"id": email_id("k-1", email()), "status": "valid"}
    assert invalid.status_code == 422
    assert queue.records == []


async def test_a_dry_run_refuses_an_email_too_large_for_the_topic_as_a_send_would(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    queue.max_record_bytes = 200

    dry_run = await client.post("/emails", params={"dry_run": "true"}, json=email())
    send = await client.post("/emails", json=email())

    assert dry_run.status_code == send.status_code == 413
    assert "too large" in dry_run.json()["detail"]
    assert queue.records == []


async def test_without_a_key_each_email_gets_a_fresh_id(client: httpx.AsyncClient) -> None:
    first = await client.post("/emails", json=email())
    second = await client.post("/emails", json=email())

    assert first.json()["id"] != second.json()["id"]


async def test_kafka_unavailable_is_503_with_retry_after() -> None:
    queue = FakeEmailQueue(unavailable=True)
    app = app_with_fakes(Settings(_env_file=None), queue, MemoryKeyStore())  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as c:
        response = await c.post("/emails", json=email())
        readiness = await c.get("/readyz")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "may or may not be queued" in response.json()["detail"]
    assert readiness.status_code == 503


async def test_validation_errors_name_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/emails", json=email(to=["ana"], subject="a\nb"))

    assert response.status_code == 422
    fields = [error["field"] for error in response.json()["errors"]]
    assert fields == ["to[0]", "subject"]
    assert response.json()["detail"].startswith("to[0]: 'ana' is not a valid email address")


async def test_too_many_recipients_is_422_on_to(client: httpx.AsyncClient) -> None:
    response = await client.post("/emails", json=email(to=[f"r{n}@example.com" for n in range(51)]))

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "to", "message": "at most 50 recipients in to, cc and bcc together, got 51"}
    ]


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/emails", content=b"{", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


async def test_a_declared_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/emails", json=email(text="x" * 5000))

    assert response.status_code == 413
    assert "4096 bytes (API_MAX_BODY_BYTES)" in response.json()["detail"]


async def test_a_streamed_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    response = await client.post(
        "/emails", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413


@pytest.mark.parametrize(
    ("location", "name"),
    [
        (("body", "to", 0), "to[0]"),
        (("body", "headers", "X-Trace"), "headers.X-Trace"),
        (("header", "Idempotency-Key"), "Idempotency-Key"),
        (("body",), "body"),
    ],
)
def test_field_names_read_like_the_json(location: tuple[int | str, ...], name: str) -> None:
    assert field_name(location) == name


def queued_record() -> EmailRecord:
    return EmailRecord.model_validate(
        {**email(), "message_id": "m-1", "created_at": "2026-11-25T09:30:00Z"}
    )


class HangingProducer:
    """A producer whose sends never get an answer, as aiokafka's after a broker restart."""

    def __init__(self) -> None:
        self.started = self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, *args: object, **kwargs: object) -> None:
        await asyncio.sleep(3600)


async def test_a_producer_that_stops_answering_is_replaced() -> None:
    settings = Settings(_env_file=None, api_produce_timeout_seconds=0.05)
    producers = Producers(lambda number: HangingProducer())
    queue = EmailQueue(settings, producers, default_topic_configs)
    await queue.start()
    await asyncio.sleep(0.01)
    record = queued_record()

    with pytest.raises(KafkaUnavailable, match="did not acknowledge"):
        await queue.enqueue(record)
    await asyncio.sleep(0.05)
    await queue.stop()

    assert len(producers.made) == 2, "a fresh producer was made"
    assert all(p.started for p in producers.made), "and started"
    assert all(p.stopped for p in producers.made), "the stuck one and the fresh one both stopped"


class StuckThenFreshProducer:
    """The first producer neither answers nor stops; the ones after it work."""

    def __init__(self, number: int) -> None:
        self.stuck = number == 1

    async def start(self) -> None: ...

    async def stop(self) -> None:
        if self.stuck:
            await asyncio.sleep(3600)

    async def send_and_wait(self, topic: str, *args: object, **kwargs: object) -> object:
        if self.stuck:
            await asyncio.sleep(3600)
        return type("RecordMetadata", (), {"topic": topic, "partition": 0, "offset": 7})


async def test_the_fresh_producer_connects_while_the_stuck_one_is_still_stopping() -> None:
    settings = Settings(_env_file=None, api_produce_timeout_seconds=0.3)
    queue = EmailQueue(settings, Producers(StuckThenFreshProducer), default_topic_configs)
    await queue.start()
    await asyncio.sleep(0.01)
    record = queued_record()
    with pytest.raises(KafkaUnavailable):
        await queue.enqueue(record)

    await asyncio.sleep(0.05)  # far less than the stuck producer's stop may take
    queued = await queue.enqueue(record)
    await queue.stop()

    assert queued == Queued(settings.email_topic, 0, 7)


async def test_too_many_recipients_are_refused_before_any_address_is_read(
    queue: FakeEmailQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 addresses took the API a second of CPU to read, only to refuse them for their
    number: API_MAX_RECIPIENTS is counted in the JSON first."""
    addresses_read: list[str] = []

    def reading(address: str, **options: Any) -> ValidatedEmail:
        addresses_read.append(address)
        return validate_email(address, **options)

    monkeypatch.setattr(schema, "validate_email", reading)
    app = app_with_fakes(Settings(_env_file=None), queue, MemoryKeyStore())  # type: ignore[arg-type]
    body = email(to=[f"n{n}@example.com" for n in range(20_000)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as default_client:
        response = await default_client.post("/emails", json=body)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "to", "message": "at most 50 recipients in to, cc and bcc together, got 20000"}
    ]
    assert addresses_read == []
    assert queue.records == []


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"reply_to": [f"r{n}@example.com" for n in range(11)]},
            "reply_to",
            "at most 10 addresses, got 11",
        ),
        ({"tags": ["t"] * 21}, "tags", "at most 20 tags, got 21"),
        (
            {"to": ['"' + "N" * 129 + '" <ana@example.com>']},
            "to[0]",
            "the display name has 129 characters, at most 128 fit in one header line: shorten it",
        ),
    ],
)
async def test_a_count_or_length_over_its_bound_is_422_naming_the_field(
    client: httpx.AsyncClient, fields: dict[str, Any], field: str, message: str
) -> None:
    response = await client.post("/emails", json=email(**fields))

    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": field, "message": message}]


async def test_an_idn_address_is_queued_and_one_without_an_a_label_form_is_422(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    """Every domain the API accepts has an A-label form, which the worker sends: one it could
    not encode is refused here, not dead-lettered after a 202."""
    queued = await client.post("/emails", json=email(to=["Ana <ana@пример.рф>"]))
    refused = await client.post("/emails", json=email(to=["ana@١٢٣.com"]))

    assert queued.status_code == 202
    assert queue.records[0].to == ["Ana <ana@пример.рф>"]
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "to[0]"
    assert "not a valid email address" in refused.json()["errors"][0]["message"]


async def test_the_largest_email_the_api_accepts_is_accepted(queue: FakeEmailQueue) -> None:
    """Every count at the schema's bound (API_MAX_RECIPIENTS raised to its 100), text and html
    filling API_MAX_BODY_BYTES: what `python -m tests.unit.worker.largest_email` times."""
    settings = Settings(_env_file=None, api_max_recipients=100)
    largest = largest_email(settings.api_max_body_bytes)
    body = largest.model_dump(
        mode="json", by_alias=True, exclude={"schema_version", "message_id", "created_at"}
    )
    app = app_with_fakes(settings, queue, MemoryKeyStore())  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as default_client:
        response = await default_client.post(
            "/emails",
            content=json.dumps(body, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json"},
        )

    assert response.status_code == 202, response.text
    assert queue.records[0].to == largest.to
