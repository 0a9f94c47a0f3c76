"""`GET /emails/{id}` from the read model, and what a 202 writes into it: the `accepted` event,
so that a GET right after the 202 finds the email, produced to the events topic too, and
`Location: /emails/{id}`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.api.status import EventPosition
from services.api.status_store import EventRow
from shared.events import Event, parse_event
from shared.settings import Settings
from tests.unit.api.email_events import MESSAGE_ID, accepted, deferred, sent
from tests.unit.api.fakes import app_with_fakes
from tests.unit.api.key_store import MemoryKeyStore
from tests.unit.api.memory_status_store import MemoryStatusStore
from tests.unit.api.test_app import FakeEmailQueue, email, email_id

ANA = "ana@example.com"


@pytest.fixture
def read_model() -> MemoryStatusStore:
    return MemoryStatusStore()


@pytest.fixture
def queue() -> FakeEmailQueue:
    return FakeEmailQueue()


@pytest.fixture
async def client(
    queue: FakeEmailQueue, read_model: MemoryStatusStore
) -> AsyncIterator[httpx.AsyncClient]:
    app = app_with_fakes(Settings(_env_file=None), queue, MemoryKeyStore(), read_model)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def keep(read_model: MemoryStatusStore, *events: Event) -> None:
    await read_model.add(
        [
            EventRow.of(event, event.to_kafka().value, EventPosition(partition=1, offset=n))
            for n, event in enumerate(events)
        ]
    )


async def test_an_email_s_status_comes_from_its_events(
    client: httpx.AsyncClient, read_model: MemoryStatusStore
) -> None:
    await keep(read_model, accepted(ANA, "bob@example.com"), sent(ANA), deferred("bob@example.com"))

    response = await client.get(f"/emails/{MESSAGE_ID}")

    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] == MESSAGE_ID
    assert answer["status"] in ("deferred", "sending")  # the deferral's wait is in 2026
    assert answer["from"] == "Shop <shop@example.com>"
    assert [r["state"] for r in answer["recipients"]] == ["sent", "deferred"]
    assert [h["type"] for h in answer["history"]] == ["accepted", "sent", "deferred"]
    assert answer["history"][1]["event"] == {"partition": 1, "offset": 1}
    assert answer["history"][1]["record"] == {"topic": "email.send", "partition": 1, "offset": 42}


async def test_an_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/emails/6f1d7c1e-8a51-4d0c-9d43-0b8f5e0e6a10")

    assert response.status_code == 404
    assert response.json() == {
        "detail": "no email has the id 6f1d7c1e-8a51-4d0c-9d43-0b8f5e0e6a10: the API never "
        "accepted it, or its events are older than the events topic keeps"
    }


@pytest.mark.parametrize("not_an_id", ["a%20b", "x" * 201, "%C3%A9"])
async def test_what_is_not_a_message_id_is_422_naming_id(
    client: httpx.AsyncClient, not_an_id: str
) -> None:
    response = await client.get(f"/emails/{not_an_id}")

    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "id"
    assert error["message"].startswith("expected a message id as POST /emails answers it")


async def test_a_read_model_that_is_away_is_503_with_retry_after(
    client: httpx.AsyncClient, read_model: MemoryStatusStore
) -> None:
    read_model.unavailable = True

    response = await client.get(f"/emails/{MESSAGE_ID}")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "the test's read model is away" in response.json()["detail"]


async def test_a_get_right_after_the_202_finds_the_email_queued(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    sent_email = await client.post("/emails", json=email(), headers={"Idempotency-Key": "k-1"})

    status = await client.get(sent_email.headers["Location"])

    assert sent_email.status_code == 202
    assert sent_email.headers["Location"] == f"/emails/{email_id('k-1', email())}"
    assert status.status_code == 200
    answer = status.json()
    assert (answer["id"], answer["status"]) == (sent_email.json()["id"], "queued")
    [history] = answer["history"]
    assert history["type"] == "accepted"
    assert history["record"] == {"topic": "email.send", "partition": 1, "offset": 0}
    assert history["event"] is None, "not read back from the events topic yet"
    assert [(r["address"], r["kind"], r["state"]) for r in answer["recipients"]] == [
        ("ana@example.com", "to", "queued")
    ]


async def test_the_accepted_event_is_produced_as_the_worker_makes_it(
    client: httpx.AsyncClient, queue: FakeEmailQueue, read_model: MemoryStatusStore
) -> None:
    response = await client.post("/emails", json=email(cc=["Ops <ops@example.com>"]))

    [produced] = queue.events
    event = parse_event(produced.value)
    assert event.type == "accepted"
    assert event.message_id == response.json()["id"]
    assert produced.key == event.message_id.encode()
    [kept] = await read_model.events_of(event.message_id)
    assert kept.body.encode() == produced.value, "the same bytes in the topic and the read model"


async def test_a_replayed_202_says_where_the_email_is_too(
    client: httpx.AsyncClient, queue: FakeEmailQueue
) -> None:
    headers = {"Idempotency-Key": "k-2"}
    first = await client.post("/emails", json=email(), headers=headers)
    replay = await client.post("/emails", json=email(), headers=headers)

    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.headers["Location"] == first.headers["Location"]
    assert len(queue.events) == 1, "a replay queues nothing, and produces no event"


async def test_a_read_model_that_is_away_never_fails_a_202(
    client: httpx.AsyncClient, queue: FakeEmailQueue, read_model: MemoryStatusStore
) -> None:
    read_model.unavailable = True

    response = await client.post("/emails", json=email())

    assert response.status_code == 202
    assert len(queue.events) == 1, "the event is still produced: the status consumer keeps it"


async def test_nothing_queued_writes_no_event(
    client: httpx.AsyncClient, queue: FakeEmailQueue, read_model: MemoryStatusStore
) -> None:
    queue.unavailable = True

    response = await client.post("/emails", json=email())
    dry_run = await client.post("/emails", params={"dry_run": "true"}, json=email())

    assert response.status_code == 503
    assert "Location" not in response.headers
    assert dry_run.status_code == 200
    assert queue.events == []
    assert read_model.rows == {}


async def test_each_email_queued_in_a_batch_gets_its_accepted_event(
    client: httpx.AsyncClient, queue: FakeEmailQueue, read_model: MemoryStatusStore
) -> None:
    response = await client.post(
        "/emails/batch", json=[email(), email(to=["not an address"]), email(subject="two")]
    )

    assert response.status_code == 202
    ids = [r["id"] for r in response.json()["results"] if r["status"] == "queued"]
    assert len(ids) == 2
    assert [parse_event(event.value).message_id for event in queue.events] == ids
    assert read_model.batches == 1, "one transaction for the batch"
    for message_id in ids:
        status = await client.get(f"/emails/{message_id}")
        assert status.json()["status"] == "queued"
