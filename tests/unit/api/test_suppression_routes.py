"""`GET /suppressions` a page at a time, `DELETE /suppressions/{address}` to lift one, on the
workers' suppression list, opened when first asked for; 503 while its store is away."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from shared.settings import Settings
from tests.unit.api.fakes import ListOpener, MemorySuppressionList, app_with_fakes
from tests.unit.api.key_store import MemoryKeyStore
from tests.unit.api.test_app import FakeEmailQueue
from tests.unit.api.test_metrics import refused, samples_of

BOUNCE = "550 5.1.1 <ana@example.com>: Recipient address rejected: User unknown"


@pytest.fixture
def suppressions() -> MemorySuppressionList:
    return MemorySuppressionList()


@pytest.fixture
def opener(suppressions: MemorySuppressionList) -> ListOpener:
    return ListOpener(suppressions)


@pytest.fixture
async def client(opener: ListOpener) -> AsyncIterator[httpx.AsyncClient]:
    app = app_with_fakes(
        Settings(_env_file=None),
        FakeEmailQueue(),  # type: ignore[arg-type]
        MemoryKeyStore(),
        suppressions=opener,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def test_the_suppressed_addresses_come_with_why_and_when(
    client: httpx.AsyncClient, suppressions: MemorySuppressionList
) -> None:
    await suppressions.suppress("Ana@Example.com", BOUNCE, "m-1")

    response = await client.get("/suppressions")

    assert response.status_code == 200
    assert response.json() == {
        "data": [
            {
                "address": "ana@example.com",
                "reply": BOUNCE,
                "message_id": "m-1",
                "created_at": "2026-11-25T09:31:00Z",
            }
        ],
        "next": None,
    }


async def test_pages_follow_one_another_by_address(
    client: httpx.AsyncClient, suppressions: MemorySuppressionList
) -> None:
    for name in ("carol", "ana", "bob", "dan", "eve"):
        await suppressions.suppress(f"{name}@example.com", BOUNCE, "m-1")

    first = (await client.get("/suppressions", params={"limit": 2})).json()
    second = (await client.get("/suppressions", params={"limit": 2, "after": first["next"]})).json()
    last = (await client.get("/suppressions", params={"limit": 2, "after": second["next"]})).json()

    assert [s["address"] for s in first["data"]] == ["ana@example.com", "bob@example.com"]
    assert first["next"] == "bob@example.com"
    assert [s["address"] for s in second["data"]] == ["carol@example.com", "dan@example.com"]
    assert [s["address"] for s in last["data"]] == ["eve@example.com"]
    assert last["next"] is None


@pytest.mark.parametrize("limit", [0, -1, 1001])
async def test_a_page_size_out_of_bounds_is_422_saying_the_bounds(
    client: httpx.AsyncClient, limit: int
) -> None:
    response = await client.get("/suppressions", params={"limit": limit})

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "field": "limit",
            "message": f"a page holds 1 to 1000 suppressions, not {limit}: ask for fewer, and "
            "for the next page with after=<next>",
        }
    ]


async def test_a_page_size_that_is_not_a_number_is_422_naming_limit(
    client: httpx.AsyncClient,
) -> None:
    before = samples_of((await client.get("/metrics")).text)

    response = await client.get("/suppressions", params={"limit": "many"})

    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == ["limit"]
    after = samples_of((await client.get("/metrics")).text)
    assert refused(after, "invalid") == refused(before, "invalid"), "no email was refused"


async def test_lifting_a_suppression_is_204_and_logged_without_the_address(
    client: httpx.AsyncClient,
    suppressions: MemorySuppressionList,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await suppressions.suppress("ana@example.com", BOUNCE, "m-1")

    with caplog.at_level(logging.INFO, logger="api.suppressions"):
        lifted = await client.delete("/suppressions/Ana@Example.com")
    again = await client.delete("/suppressions/ana@example.com")

    assert lifted.status_code == 204
    assert lifted.content == b""
    assert suppressions.suppressions == {}
    assert again.status_code == 404
    assert again.json() == {"detail": "ana@example.com is not suppressed"}
    [line] = [record.getMessage() for record in caplog.records]
    assert line.startswith("lifted the suppression of an address at example.com (sha256 ")
    assert "ana@" not in line.lower()


async def test_an_address_is_lifted_as_the_worker_names_it(
    client: httpx.AsyncClient, suppressions: MemorySuppressionList
) -> None:
    """The worker suppresses the envelope's form: the domain as A-labels."""
    await suppressions.suppress("ana@xn--e1afmkfd.xn--p1ai", BOUNCE, "m-1")

    response = await client.delete("/suppressions/Ana <ana@пример.рф>")

    assert response.status_code == 204


async def test_an_address_with_a_slash_can_be_lifted(
    client: httpx.AsyncClient, suppressions: MemorySuppressionList
) -> None:
    await suppressions.suppress("a/b@example.com", BOUNCE, "m-1")

    response = await client.delete("/suppressions/a/b@example.com")

    assert response.status_code == 204


async def test_a_list_that_is_away_is_503_with_retry_after(
    client: httpx.AsyncClient, suppressions: MemorySuppressionList
) -> None:
    suppressions.unavailable = True

    listing = await client.get("/suppressions")
    lifting = await client.delete("/suppressions/ana@example.com")

    for response in (listing, lifting):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert response.json()["detail"] == (
            "cannot reach the suppression list: the test's suppression list is away. Retry later"
        )


async def test_a_store_that_cannot_be_opened_yet_is_503_until_it_can(
    client: httpx.AsyncClient, opener: ListOpener
) -> None:
    opener.cannot_open = True
    away = await client.get("/suppressions")
    opener.cannot_open = False
    back = await client.get("/suppressions")
    await client.get("/suppressions")

    assert away.status_code == 503
    assert "cannot reach the dedupe store at dedupe-store" in away.json()["detail"]
    assert back.status_code == 200
    assert opener.calls == 2, "opened once it could be, then kept open"
