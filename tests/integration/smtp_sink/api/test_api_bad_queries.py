"""Every query path of the real sink's HTTP API answers a malformed query with a 400 that says
what was wrong and how to fix it, never a 500: numbers beyond SQLite's 64-bit integers, negative
or non-numeric pages, thousands of search words, JSON bodies nested too deep or holding strings
SQLite cannot take. The sink's log must stay free of tracebacks (the fixture checks at its end)."""

from __future__ import annotations

import httpx
import pytest

from services.smtp_sink.api.search import MAX_QUERY_CHARS, MAX_QUERY_TERMS
from tests.integration.smtp_sink.conftest import RunningSink, email, send

TOO_BIG = "99999999999999999999999"
LARGEST_SQLITE_INTEGER = "9223372036854775807"
THOUSANDS_OF_WORDS = " ".join(f"w{n}" for n in range(5000))


async def assert_a_400_saying(response: httpx.Response, *reasons: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/plain")
    for reason in reasons:
        assert reason in response.text


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize(
    ("query", "reasons"),
    [
        (f"larger:{TOO_BIG}", ["more bytes than the sink can compare", "use a smaller size"]),
        (f"smaller:{TOO_BIG}", ["more bytes than the sink can compare"]),
        ("larger:" + "9" * 400, ["more bytes than the sink can compare"]),
        ("larger:99999999999999999mb", ["more bytes than the sink can compare"]),
        (
            THOUSANDS_OF_WORDS[: MAX_QUERY_CHARS - 1],
            [f"more than {MAX_QUERY_TERMS} terms", "search for fewer, more distinctive words"],
        ),
        (THOUSANDS_OF_WORDS, [f"the sink takes at most {MAX_QUERY_CHARS}"]),
        (" ".join(["from:w"] * 2000), [f"the sink takes at most {MAX_QUERY_CHARS}"]),
    ],
    ids=["larger", "smaller", "400 digits", "in mb", "thousands of terms", "long", "from: x2000"],
)
async def test_a_search_the_sink_cannot_run_is_a_400_that_says_why(
    sink: RunningSink, api: httpx.AsyncClient, method: str, query: str, reasons: list[str]
) -> None:
    await send(sink, email())

    response = await api.request(method, "/api/v1/search", params={"query": query})

    await assert_a_400_saying(response, "Error: ", *reasons)
    assert (await api.get("/api/v1/messages")).json()["total"] == 1, "nothing deleted"


@pytest.mark.parametrize(
    ("path", "query"),
    [("/api/v1/messages", {}), ("/api/v1/search", {"query": "hello"})],
    ids=["messages", "search"],
)
@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("start", TOO_BIG, f"start must be at most {LARGEST_SQLITE_INTEGER}"),
        ("limit", TOO_BIG, f"limit must be at most {LARGEST_SQLITE_INTEGER}"),
        ("limit", "9223372036854775808", f"limit must be at most {LARGEST_SQLITE_INTEGER}"),
        ("start", "1" * 5000, f"start must be at most {LARGEST_SQLITE_INTEGER}"),
        ("start", "-1", "start must be 0 or more, not '-1'; leave it out for 0"),
        ("limit", "-5", "limit must be 0 or more, not '-5'; leave it out for 50"),
        ("start", "abc", "start must be a whole number from 0 to"),
        ("limit", "1e3", "limit must be a whole number from 0 to"),
    ],
)
async def test_a_page_the_sink_cannot_read_is_a_400_that_says_why(
    sink: RunningSink,
    api: httpx.AsyncClient,
    path: str,
    query: dict[str, str],
    name: str,
    value: str,
    reason: str,
) -> None:
    response = await api.get(path, params={**query, name: value})

    await assert_a_400_saying(response, reason)


async def test_the_largest_page_numbers_sqlite_takes_are_answered(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    await send(sink, email(subject="hello"))
    largest = {"limit": LARGEST_SQLITE_INTEGER}

    listed = await api.get("/api/v1/messages", params=largest)
    skipped = await api.get("/api/v1/messages", params={"start": LARGEST_SQLITE_INTEGER})
    searched = await api.get("/api/v1/search", params={"query": "hello", **largest})

    assert [m["Subject"] for m in listed.json()["messages"]] == ["hello"]
    assert (skipped.json()["messages"], skipped.json()["start"]) == ([], 2**63 - 1)
    assert searched.json()["messages_count"] == 1


async def test_the_most_terms_of_the_costliest_filter_are_answered(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    """addressed: is five conditions and five parameters per term: the most terms stay within
    SQLite's limits on both."""
    await send(sink, email(to="bob@example.com"))
    query = " ".join(["addressed:bob"] * MAX_QUERY_TERMS)

    response = await api.get("/api/v1/search", params={"query": query})

    assert response.status_code == 200, response.text
    assert response.json()["messages_count"] == 1


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"IDs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"],
    ids=["deep array", "deep IDs"],
)
async def test_a_delete_body_nested_too_deep_is_a_400_and_deletes_nothing(
    sink: RunningSink, api: httpx.AsyncClient, body: bytes
) -> None:
    await send(sink, email())

    response = await api.request("DELETE", "/api/v1/messages", content=body)

    await assert_a_400_saying(response, 'invalid JSON body, expected {"IDs": [...]}')
    assert (await api.get("/api/v1/messages")).json()["total"] == 1


async def test_a_delete_of_ids_that_are_not_unicode_text_is_a_400_and_deletes_nothing(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    await send(sink, email())

    response = await api.request("DELETE", "/api/v1/messages", content=b'{"IDs": ["\\ud800"]}')

    await assert_a_400_saying(response, "IDs must be a list of message IDs")
    assert (await api.get("/api/v1/messages")).json()["total"] == 1


async def test_a_chaos_body_nested_too_deep_is_a_400_and_changes_nothing(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    before = (await api.get("/api/v1/chaos")).json()

    response = await api.put("/api/v1/chaos", content=b'{"Sender": ' + b"[" * 100_000)

    await assert_a_400_saying(response, "invalid JSON body")
    assert (await api.get("/api/v1/chaos")).json() == before
