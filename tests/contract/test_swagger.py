"""Every route the sink shares with Mailpit answers as Mailpit's swagger.json says: a status the
route declares, and a body of the schema it declares, every declared field present."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.contract.mails import Mail, deliver, mailbox
from tests.contract.swagger import MAILPIT_VERSION, SOURCE_IN_MODULE, SWAGGER_PATH, check_response
from tests.integration.smtp_sink.conftest import RunningSink

pytestmark = pytest.mark.timeout(60)


async def filled(sink: RunningSink) -> list[Mail]:
    mails = mailbox()
    await deliver(sink.smtp_port, mails)
    return mails


def subjects(listing: dict[str, object]) -> list[str]:
    messages = listing["messages"]
    assert isinstance(messages, list)
    return [message["Subject"] for message in messages]


def test_the_vendored_swagger_is_mailpits_own() -> None:
    """Where Go's module cache has Mailpit (make mailpit-fetch puts it there), the copy matches."""
    module = Path.home() / f"go/pkg/mod/github.com/axllent/mailpit@{MAILPIT_VERSION}"
    if not module.is_dir():
        pytest.skip(f"no Mailpit {MAILPIT_VERSION} in Go's module cache to compare with")
    assert json.loads(SWAGGER_PATH.read_text()) == json.loads(
        (module / SOURCE_IN_MODULE).read_text()
    )


def test_the_validator_refuses_what_mailpits_clients_would_trip_on() -> None:
    """The check itself: a missing field, a wrong type, an undeclared status, JSON as text."""
    summary = {"total": 0, "unread": 0, "messages_count": 0, "messages_unread": 0, "start": 0}
    for response, says in [
        (httpx.Response(200, json=summary | {"messages": []}), "'tags' is a required property"),
        (httpx.Response(200, json=summary | {"tags": [], "messages": [{}]}), "'ID' is a required"),
        (httpx.Response(200, json=summary | {"tags": [], "messages": {}}), "is not of type"),
        (httpx.Response(200, json=summary | {"tags": [], "messages": [], "total": -1}), "uint64"),
        (httpx.Response(500, text="boom"), "declares no 500"),
        (httpx.Response(400, json={"error": "bad"}), "text/plain"),
    ]:
        with pytest.raises(AssertionError, match=says):
            check_response("GET", "/api/v1/messages", response)


async def test_an_empty_list(api: httpx.AsyncClient) -> None:
    listing = check_response("GET", "/api/v1/messages", await api.get("/api/v1/messages"))

    assert (listing["total"], listing["messages_count"], listing["messages"]) == (0, 0, [])


async def test_a_list_with_start_and_limit(sink: RunningSink, api: httpx.AsyncClient) -> None:
    await filled(sink)

    everything = check_response("GET", "/api/v1/messages", await api.get("/api/v1/messages"))
    page = check_response(
        "GET", "/api/v1/messages", await api.get("/api/v1/messages?start=1&limit=1")
    )

    assert subjects(everything) == ["Weekly digest", "Invoice attached", "Order shipped"]
    assert (page["start"], page["total"], subjects(page)) == (1, 3, ["Invoice attached"])


@pytest.mark.parametrize("which", ["by ID", "latest"])
async def test_a_message(sink: RunningSink, api: httpx.AsyncClient, which: str) -> None:
    await deliver(sink.smtp_port, mailbox()[:2])
    newest_id = (await api.get("/api/v1/messages")).json()["messages"][0]["ID"]
    message_id = newest_id if which == "by ID" else "latest"

    message = check_response(
        "GET", "/api/v1/message/{ID}", await api.get(f"/api/v1/message/{message_id}")
    )

    assert (message["ID"], message["Subject"]) == (newest_id, "Invoice attached")
    assert [part["FileName"] for part in message["Attachments"]] == ["invoice.pdf"]
    assert [part["ContentID"] for part in message["Inline"]] == ["logo@example.com"]
    assert message["ListUnsubscribe"]["Links"] == [
        "mailto:leave@example.com",
        "https://example.com/leave",
    ]


async def test_headers(sink: RunningSink, api: httpx.AsyncClient) -> None:
    await filled(sink)

    headers = check_response(
        "GET", "/api/v1/message/{ID}/headers", await api.get("/api/v1/message/latest/headers")
    )

    assert headers["Subject"] == ["Weekly digest"]


async def test_raw_is_plain_text(sink: RunningSink, api: httpx.AsyncClient) -> None:
    mails = await filled(sink)

    raw = check_response(
        "GET", "/api/v1/message/{ID}/raw", await api.get("/api/v1/message/latest/raw")
    )

    assert f"Message-ID: <{mails[-1].message_id}>" in raw


@pytest.mark.parametrize(
    "route", ["/api/v1/message/{ID}", "/api/v1/message/{ID}/headers", "/api/v1/message/{ID}/raw"]
)
async def test_an_unknown_id_is_the_declared_404(api: httpx.AsyncClient, route: str) -> None:
    for message_id in ("no-such-id", "latest"):  # latest of an empty mailbox
        response = await api.get(route.replace("{ID}", message_id))

        assert response.status_code == 404
        assert check_response("GET", route, response)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("to:gina@example.com", ["Weekly digest"]),
        ("to:frank", ["Invoice attached"]),
        ("from:carol@example.com", ["Invoice attached"]),
        ("from:ann", ["Weekly digest", "Order shipped"]),
        ("subject:shipped", ["Order shipped"]),
        ('subject:"weekly digest"', ["Weekly digest"]),
        ("message-id:invoice-2@billing.example", ["Invoice attached"]),
        ("invoice", ["Invoice attached"]),
        ("second line", ["Weekly digest", "Order shipped"]),
        ("-from:ann", ["Invoice attached"]),
        ("has:attachment", ["Invoice attached"]),
        ("nothing-matches-this", []),
    ],
)
async def test_search(
    sink: RunningSink, api: httpx.AsyncClient, query: str, expected: list[str]
) -> None:
    await filled(sink)

    found = check_response(
        "GET", "/api/v1/search", await api.get("/api/v1/search", params={"query": query})
    )

    assert (subjects(found), found["messages_count"], found["total"]) == (
        expected,
        len(expected),
        3,
    )


async def test_a_search_the_sink_refuses_is_the_declared_400(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/search", params={"query": "before:2025-01-01"})

    assert response.status_code == 400
    assert "before:" in check_response("GET", "/api/v1/search", response)


async def test_delete_by_ids_then_all(sink: RunningSink, api: httpx.AsyncClient) -> None:
    await filled(sink)
    listed = (await api.get("/api/v1/messages")).json()["messages"]

    by_ids = await api.request(
        "DELETE", "/api/v1/messages", json={"IDs": [listed[0]["ID"], listed[2]["ID"]]}
    )
    assert check_response("DELETE", "/api/v1/messages", by_ids) == "ok"
    assert subjects((await api.get("/api/v1/messages")).json()) == ["Invoice attached"]

    everything = await api.delete("/api/v1/messages")
    assert check_response("DELETE", "/api/v1/messages", everything) == "ok"
    assert (await api.get("/api/v1/messages")).json()["total"] == 0


async def test_delete_by_search(sink: RunningSink, api: httpx.AsyncClient) -> None:
    await filled(sink)

    response = await api.delete("/api/v1/search", params={"query": "from:ann"})

    assert check_response("DELETE", "/api/v1/search", response) == "ok"
    assert subjects((await api.get("/api/v1/messages")).json()) == ["Invoice attached"]


async def test_info(sink: RunningSink, api: httpx.AsyncClient) -> None:
    await filled(sink)
    await api.get("/api/v1/message/latest")  # read one
    await api.request("DELETE", "/api/v1/search", params={"query": "subject:shipped"})

    info = check_response("GET", "/api/v1/info", await api.get("/api/v1/info"))

    assert (info["Messages"], info["Unread"], info["Tags"]) == (2, 1, {})
    assert info["Database"] == str(sink.run_dir / "sink" / "messages.sqlite3")
    assert info["DatabaseSize"] > 0
    runtime = info["RuntimeStats"]
    assert runtime["SMTPAccepted"] >= 3  # the sink is shared by the session's tests
    assert runtime["MessagesDeleted"] >= 1
    assert runtime["Memory"] > 0


async def test_chaos_get_and_put(api: httpx.AsyncClient) -> None:
    switched_off = check_response("GET", "/api/v1/chaos", await api.get("/api/v1/chaos"))
    assert switched_off == {
        "Sender": {"ErrorCode": 451, "Probability": 0},
        "Recipient": {"ErrorCode": 451, "Probability": 0},
        "Authentication": {"ErrorCode": 535, "Probability": 0},
    }

    set_to = {"Recipient": {"ErrorCode": 452, "Probability": 10}}
    answer = check_response("PUT", "/api/v1/chaos", await api.put("/api/v1/chaos", json=set_to))

    assert answer["Recipient"] == {"ErrorCode": 452, "Probability": 10}
    assert check_response("GET", "/api/v1/chaos", await api.get("/api/v1/chaos")) == answer


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"Recipient": {"ErrorCode": 250, "Probability": 10}}, "ErrorCode must be between 400"),
        ({"Recipient": {"ErrorCode": 451, "Probability": 101}}, "Probability must be between 0"),
        ({"Recipent": {"ErrorCode": 451, "Probability": 10}}, "unknown chaos trigger"),
        ({"Recipient": {"ErrorCode": 451, "Chance": 10}}, "unknown field 'Chance'"),
    ],
)
async def test_a_chaos_put_it_cannot_take_is_the_declared_400(
    api: httpx.AsyncClient, body: dict[str, object], says: str
) -> None:
    before = (await api.get("/api/v1/chaos")).json()

    response = await api.put("/api/v1/chaos", json=body)

    assert response.status_code == 400
    assert says in check_response("PUT", "/api/v1/chaos", response)
    assert (await api.get("/api/v1/chaos")).json() == before, "nothing changed"
