"""The sink beside a real Mailpit, given the same mails: the same keys and JSON types on every
shared route, the same listing fields, the same matches for each search, the same statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.contract.mails import deliver, mailbox
from tests.integration.smtp_sink.conftest import RunningSink
from tests.mailpit import RunningMailpit

pytestmark = pytest.mark.timeout(60)

SINK_ONLY_FIELDS = {"Duplicate", "MessageIDCount"}  # the duplicate witness Mailpit lacks
# Mailpit writes these into the message it stores; the sink keeps the message as it came.
MAILPIT_ADDED_HEADERS = {"Received", "Return-Path"}
# Listing fields that depend only on the mail: equal on both, whatever the server.
SAME_FIELDS = (
    "MessageID", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "Username", "Tags", "Read",
    "Attachments", "Snippet",
)  # fmt: skip
SEARCHES = (
    "to:gina@example.com",
    "to:frank",
    "from:carol@example.com",
    "from:ann",
    "subject:shipped",
    'subject:"weekly digest"',
    "message-id:invoice-2@billing.example",
    "invoice",
    "second line",
    "-from:ann",
    "has:attachment",
    "is:unread",
    "nothing-matches-this",
)


def shape(value: Any) -> Any:
    """Keys and JSON types, all the way down; a list is the shape of its first item.

    Mailpit writes an empty list as null where Go left a slice nil; both are shaped as [].
    """
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items() if key not in SINK_ONLY_FIELDS}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if value is None:
        return []
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, int | float) else "string"


def same_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """The fields that must be equal, Mailpit's null read as the empty list it stands for."""
    return {field: [] if summary[field] is None else summary[field] for field in SAME_FIELDS}


@pytest.fixture
async def both(
    sink: RunningSink, fresh_mailpit: RunningMailpit
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Clients of the sink and of Mailpit, each given the same three mails."""
    await deliver(sink.smtp_port, mailbox())
    await deliver(fresh_mailpit.smtp_port, mailbox())
    async with (
        httpx.AsyncClient(base_url=sink.api) as ours,
        httpx.AsyncClient(base_url=fresh_mailpit.api) as mailpits,
    ):
        yield ours, mailpits


async def test_every_shared_route_has_mailpits_keys_and_types(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    ours, mailpit = both
    for route in (
        "/api/v1/messages",
        "/api/v1/messages?start=1&limit=1",
        "/api/v1/search?query=from%3Aann",
        "/api/v1/message/latest",
        "/api/v1/info",
        "/api/v1/chaos",
    ):
        our_answer, mailpits = await ours.get(route), await mailpit.get(route)

        assert our_answer.status_code == mailpits.status_code == 200, route
        assert shape(our_answer.json()) == shape(mailpits.json()), route

    # The invoice: HTML, an inline image, an attachment, unsubscribe links.
    our_invoice, mailpits_invoice = [
        (await client.get(f"/api/v1/message/{listing['messages'][1]['ID']}")).json()
        for client in both
        for listing in [(await client.get("/api/v1/messages")).json()]
    ]
    assert shape(our_invoice) == shape(mailpits_invoice)
    assert our_invoice["ListUnsubscribe"] == mailpits_invoice["ListUnsubscribe"]
    assert [part["FileName"] for part in our_invoice["Attachments"]] == [
        part["FileName"] for part in mailpits_invoice["Attachments"]
    ]


async def test_headers_are_the_mails_own_where_mailpit_adds_its_trace(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    ours, mailpit = [(await client.get("/api/v1/message/latest/headers")).json() for client in both]

    assert set(mailpit) - set(ours) == MAILPIT_ADDED_HEADERS
    assert {name: values for name, values in mailpit.items() if name in ours} == ours


async def test_listings_agree_field_by_field(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    ours, mailpit = [(await client.get("/api/v1/messages")).json() for client in both]

    assert [same_fields(summary) for summary in ours["messages"]] == [
        same_fields(summary) for summary in mailpit["messages"]
    ]
    counts = ("total", "unread", "messages_count", "messages_unread", "start", "tags")
    assert {key: ours[key] for key in counts} == {key: mailpit[key] for key in counts}


async def test_each_search_matches_what_mailpit_matches(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    for client in both:
        await client.get("/api/v1/message/latest")  # one read, for is:unread
    for query in SEARCHES:
        ours, mailpit = [
            (await client.get("/api/v1/search", params={"query": query})).json() for client in both
        ]

        assert [m["Subject"] for m in ours["messages"]] == [
            m["Subject"] for m in mailpit["messages"]
        ], query
        assert (ours["messages_count"], ours["total"]) == (
            mailpit["messages_count"],
            mailpit["total"],
        ), query


async def test_unknown_ids_and_deletes_answer_as_mailpit_does(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    for route in (
        "/api/v1/message/no-such-id",
        "/api/v1/message/no-such-id/headers",
        "/api/v1/message/no-such-id/raw",
    ):
        statuses = [(await client.get(route)).status_code for client in both]
        assert statuses == [404, 404], route

    for method, route, params in (
        ("DELETE", "/api/v1/search", {"query": "from:carol"}),
        ("DELETE", "/api/v1/messages", {}),
    ):
        answers = [await client.request(method, route, params=params) for client in both]
        assert [(a.status_code, a.text) for a in answers] == [(200, "ok"), (200, "ok")], route
    listings = [(await client.get("/api/v1/messages")).json()["total"] for client in both]
    assert listings == [0, 0]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 200),
        ({"Recipient": {"ErrorCode": 452, "Probability": 10}}, 200),
        ({"Sender": {"Probability": 5}, "Authentication": {"ErrorCode": 0, "Probability": 1}}, 200),
        ({"Recipient": {"ErrorCode": 250, "Probability": 10}}, 400),
        ({"Recipient": {"ErrorCode": 451, "Probability": 101}}, 400),
        ({"Recipient": {"ErrorCode": "451", "Probability": 10}}, 400),
    ],
)
async def test_chaos_puts_answer_as_mailpit_does(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], body: dict[str, Any], status: int
) -> None:
    answers = [await client.put("/api/v1/chaos", json=body) for client in both]

    assert [answer.status_code for answer in answers] == [status, status]
    if status == 200:
        assert answers[0].json() == answers[1].json()
    current = [(await client.get("/api/v1/chaos")).json() for client in both]
    assert current[0] == current[1]
