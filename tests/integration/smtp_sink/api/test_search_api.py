"""Mailpit's search routes on the real sink: GET and DELETE /api/v1/search, over SMTP and HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.smtp_sink.conftest import RunningSink, email, send


async def send_three(sink: RunningSink) -> None:
    """Three emails that each filter tells apart; the newest is listed first."""
    await send(
        sink,
        email(
            subject="Order shipped",
            to="Bob <bob@example.com>",
            message_id="<order-1@shop.example>",
            body="Your parcel left Köln today.\n",
        ),
    )
    await send(
        sink,
        email(
            subject="Weekly digest",
            to="dan@example.com",
            sender="Carol <carol@example.com>",
            message_id="<digest-2@news.example>",
            body="Nothing shipped this week.\n",
        ),
    )
    await send(
        sink,
        email(
            subject="Hello big world",
            to="erin@example.com",
            message_id="<hello-3@example.com>",
            body="Plain greetings.\n",
        ),
    )


async def found(api: httpx.AsyncClient, query: str) -> list[str]:
    response = await api.get("/api/v1/search", params={"query": query})
    assert response.status_code == 200, response.text
    return [message["Subject"] for message in response.json()["messages"]]


async def test_search_answers_mailpits_summary_of_the_matches(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    await send_three(sink)
    await api.get("/api/v1/message/latest")  # read the newest: "Hello big world"

    listing = (await api.get("/api/v1/search", params={"query": "from:ann"})).json()

    assert {key: listing[key] for key in listing if key != "messages"} == {
        "total": 3,  # the mailbox
        "unread": 2,
        "count": 2,  # on this page
        "messages_count": 2,  # the matches
        "messages_unread": 1,
        "start": 0,
        "tags": [],
    }
    assert [m["Subject"] for m in listing["messages"]] == ["Hello big world", "Order shipped"]
    assert {"Duplicate", "MessageIDCount", "Snippet"} <= set(listing["messages"][0])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("to:bob@example.com", ["Order shipped"]),
        ("to:Bob", ["Order shipped"]),
        ("from:carol@example.com", ["Weekly digest"]),
        ('subject:"big world"', ["Hello big world"]),
        ("SUBJECT:weekly", ["Weekly digest"]),
        ("message-id:digest-2@news.example", ["Weekly digest"]),
        ("message-id:<order-1@shop.example>", ["Order shipped"]),
        ("shipped", ["Weekly digest", "Order shipped"]),  # a subject, and a body
        ("köln", ["Order shipped"]),
        ('"parcel left"', ["Order shipped"]),
        ("carol", ["Weekly digest"]),  # a sender's name
        ("-shipped", ["Hello big world"]),
        ("!from:ann", ["Weekly digest"]),
        ("from:ann -to:bob", ["Hello big world"]),
        ("no-such-word", []),
    ],
)
async def test_search_filters_free_words_and_negation(
    sink: RunningSink, api: httpx.AsyncClient, query: str, expected: list[str]
) -> None:
    await send_three(sink)

    assert await found(api, query) == expected


async def test_search_pages_with_start_and_limit(sink: RunningSink, api: httpx.AsyncClient) -> None:
    await send_three(sink)

    first = (await api.get("/api/v1/search", params={"query": "e", "limit": 2})).json()
    rest = (await api.get("/api/v1/search", params={"query": "e", "start": 2})).json()

    assert [m["Subject"] for m in first["messages"]] == ["Hello big world", "Weekly digest"]
    assert [m["Subject"] for m in rest["messages"]] == ["Order shipped"]
    assert (first["messages_count"], rest["messages_count"], rest["start"]) == (3, 3, 2)


async def test_delete_by_search_deletes_only_the_matches(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    await send_three(sink)

    response = await api.delete("/api/v1/search", params={"query": "shipped"})

    assert (response.status_code, response.text) == (200, "ok")
    listed = (await api.get("/api/v1/messages")).json()
    assert [m["Subject"] for m in listed["messages"]] == ["Hello big world"]
    assert listed["total"] == 1


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "Error: no search query"),
        ({"query": "  "}, "Error: no search query"),
        ({"query": 'subject:"open'}, "unclosed double quote"),
        ({"query": "to:"}, "to: needs a value"),
        ({"query": "before:2025-01-01"}, "does not support Mailpit's before: filter"),
    ],
)
async def test_a_bad_query_is_a_400_that_says_why_and_deletes_nothing(
    sink: RunningSink, api: httpx.AsyncClient, params: dict[str, str], reason: str
) -> None:
    await send(sink, email())

    searched = await api.get("/api/v1/search", params=params)
    deleted = await api.delete("/api/v1/search", params=params)

    for response in (searched, deleted):
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("text/plain")
        assert reason in response.text
    assert (await api.get("/api/v1/messages")).json()["total"] == 1


async def test_a_hostile_query_is_only_words(sink: RunningSink, api: httpx.AsyncClient) -> None:
    await send(sink, email(subject="kept"))

    hostile = 'subject:"\' OR 1=1); DELETE FROM messages; --"'
    searched = await found(api, hostile)
    deleted = await api.delete("/api/v1/search", params={"query": hostile})

    assert searched == []
    assert deleted.status_code == 200
    assert await found(api, "kept") == ["kept"]
