"""The real sink over SMTP (aiosmtplib) and HTTP (httpx): storage, Mailpit's API, faults, misuse."""

from __future__ import annotations

import asyncio
import uuid
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from tests.integration.smtp_sink.conftest import (
    LATER,
    MAX_MESSAGE_BYTES,
    NOBODY,
    RunningSink,
    email,
    running_sink,
    send,
)

# The test emails carry no X-Accepted-At, so the sink has no latency to report.
NO_LATENCIES = {"count": 0, "p50_seconds": None, "p99_seconds": None}


async def session(sink: RunningSink, *lines: bytes) -> list[str]:
    """Speak raw SMTP, one line (or DATA block) at a time; returns each reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sink.smtp_port)
    replies = [await _reply(reader)]
    for line in lines:
        writer.write(line)
        await writer.drain()
        replies.append(await _reply(reader))
    writer.close()
    await writer.wait_closed()
    return replies


async def _reply(reader: asyncio.StreamReader) -> str:
    lines = [await asyncio.wait_for(reader.readline(), timeout=10)]
    while lines[-1][3:4] == b"-":
        lines.append(await asyncio.wait_for(reader.readline(), timeout=10))
    return b"".join(lines).decode("utf-8", errors="replace")


async def test_message_is_stored_and_listed_in_mailpits_shape(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    reply = await send(sink, email(subject="Listed", message_id="<listed-1@example.com>"))

    listing = (await api.get("/api/v1/messages")).json()

    assert reply.startswith("2.0.0 OK stored as ")
    assert {key: listing[key] for key in ("total", "unread", "messages_count", "start")} == {
        "total": 1,
        "unread": 1,
        "messages_count": 1,
        "start": 0,
    }
    assert listing["tags"] == []
    [summary] = listing["messages"]
    assert reply.endswith(summary["ID"])
    assert summary["MessageID"] == "listed-1@example.com"
    assert summary["Subject"] == "Listed"
    assert summary["From"] == {"Name": "Ann Sender", "Address": "ann@example.com"}
    assert summary["To"] == [{"Name": "", "Address": "bob@example.com"}]
    assert summary["Read"] is False
    assert summary["Snippet"] == "First line Second line"
    assert summary["Created"].endswith("Z")
    assert (summary["Duplicate"], summary["MessageIDCount"]) == (False, 1)


async def test_listing_is_newest_first_and_paginated(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    for number in range(3):
        await send(sink, email(subject=f"number {number}"))

    first_page = (await api.get("/api/v1/messages", params={"limit": 2})).json()
    second_page = (await api.get("/api/v1/messages", params={"start": 2, "limit": 2})).json()

    assert [m["Subject"] for m in first_page["messages"]] == ["number 2", "number 1"]
    assert [m["Subject"] for m in second_page["messages"]] == ["number 0"]
    assert (second_page["start"], second_page["total"]) == (2, 3)


async def test_message_by_id_and_latest_have_mailpits_message_shape(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    await send(sink, email(subject="older"))
    await send(sink, email(subject="newest", message_id="<newest@example.com>"))
    newest_id = (await api.get("/api/v1/messages")).json()["messages"][0]["ID"]

    by_id = (await api.get(f"/api/v1/message/{newest_id}")).json()
    latest = (await api.get("/api/v1/message/latest")).json()

    assert by_id == latest
    assert by_id["ID"] == newest_id
    assert by_id["MessageID"] == "newest@example.com"
    assert by_id["Subject"] == "newest"
    assert by_id["Text"] == "First line\nSecond line\n"
    assert by_id["HTML"] == ""
    assert by_id["ReturnPath"] == "ann@example.com"
    assert (by_id["Inline"], by_id["Attachments"], by_id["Tags"]) == ([], [], [])
    assert by_id["ListUnsubscribe"]["Links"] == []


async def test_getting_a_message_marks_it_read(sink: RunningSink, api: httpx.AsyncClient) -> None:
    await send(sink, email())
    await send(sink, email())

    await api.get("/api/v1/message/latest")
    listing = (await api.get("/api/v1/messages")).json()

    assert (listing["total"], listing["unread"]) == (2, 1)
    assert [m["Read"] for m in listing["messages"]] == [True, False]


async def test_unknown_id_is_404_with_a_clear_message(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    for route in ("/api/v1/message/no-such-id", "/api/v1/message/no-such-id/raw"):
        response = await api.get(route)

        assert response.status_code == 404
        assert response.text == "Message not found: no message has ID 'no-such-id'"


async def test_latest_in_an_empty_sink_is_404(sink: RunningSink, api: httpx.AsyncClient) -> None:
    response = await api.get("/api/v1/message/latest")

    assert response.status_code == 404
    assert "no messages" in response.text


async def test_raw_returns_the_source_as_received(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    raw = b"From: ann@example.com\r\nSubject: raw\r\nX-Custom: kept\r\n\r\nbody\r\n"
    await send(sink, raw)

    response = await api.get("/api/v1/message/latest/raw")

    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == raw


async def test_one_message_with_its_raw_source_in_one_request(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    raw = b"From: ann@example.com\r\nSubject: raw\r\nMessage-ID: <one@test>\r\n\r\nbody\r\n"
    await send(sink, raw)
    listed = (await api.get("/api/v1/messages")).json()["messages"][0]

    response = await api.get(f"/api/v1/messages/{listed['ID']}")

    assert response.status_code == 200
    assert response.json()["MessageID"] == "one@test"
    assert response.json()["Raw"] == raw.decode()
    assert (await api.get("/api/v1/messages/no-such-id")).status_code == 404


async def test_headers_are_mailpits_name_to_values_map(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    raw = b"message-id: <h@example.com>\r\nX-Tag: a\r\nX-Tag: b\r\nSubject: hi\r\n\r\nbody\r\n"
    await send(sink, raw)

    headers = (await api.get("/api/v1/message/latest/headers")).json()

    assert headers == {"Message-Id": ["<h@example.com>"], "Subject": ["hi"], "X-Tag": ["a", "b"]}


async def test_delete_without_ids_deletes_all(sink: RunningSink, api: httpx.AsyncClient) -> None:
    await send(sink, email())
    await send(sink, email())

    response = await api.delete("/api/v1/messages")

    assert (response.status_code, response.text) == (200, "ok")
    assert (await api.get("/api/v1/messages")).json()["total"] == 0


async def test_delete_with_ids_deletes_only_those(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    for subject in ("keep", "drop 1", "drop 2"):
        await send(sink, email(subject=subject))
    listed = (await api.get("/api/v1/messages")).json()["messages"]
    dropped = [m["ID"] for m in listed if m["Subject"].startswith("drop")]

    response = await api.request("DELETE", "/api/v1/messages", json={"IDs": dropped})

    assert response.text == "ok"
    remaining = (await api.get("/api/v1/messages")).json()["messages"]
    assert [m["Subject"] for m in remaining] == ["keep"]


async def test_delete_with_an_unreadable_body_deletes_nothing(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    await send(sink, email())

    response = await api.request("DELETE", "/api/v1/messages", content=b"{not json")

    assert response.status_code == 400
    assert (await api.get("/api/v1/messages")).json()["total"] == 1


async def test_same_message_id_twice_is_flagged_as_duplicate(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    message_id = f"<twice-{uuid.uuid4().hex}@example.com>"
    await send(sink, email(message_id=message_id))
    await send(sink, email(message_id=message_id))
    await send(sink, email())

    listed = (await api.get("/api/v1/messages")).json()["messages"]
    stats = (await api.get("/api/v1/stats")).json()

    twice = [m for m in listed if f"<{m['MessageID']}>" == message_id]
    assert [(m["Duplicate"], m["MessageIDCount"]) for m in twice] == [(True, 2), (False, 1)]
    assert 1 <= stats.pop("max_rate_1s") <= 3  # how many fell in one second is the machine's
    assert stats == {
        "received": 3,
        "unique_message_ids": 2,
        "duplicates": 1,
        "latency": NO_LATENCIES,
    }
    assert f"!!! DUPLICATE Message-ID {message_id} (seen 2 times)" in sink.output()


async def test_each_message_is_printed_as_a_block(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    await send(sink, email(subject="Printed subject", message_id="<printed@example.com>"))

    printed = sink.output()

    assert "    Message-ID: <printed@example.com>" in printed
    assert "    From:       Ann Sender <ann@example.com>" in printed
    assert "    Subject:    Printed subject" in printed
    assert "    Text:       First line" in printed


async def test_4xx_recipient_gets_451_and_the_other_recipient_still_gets_the_message(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    refused, reply = await aiosmtplib.send(
        email(),
        recipients=[LATER, "bob@example.com"],
        hostname="127.0.0.1",
        port=sink.smtp_port,
    )

    assert refused[LATER].code == 451
    assert refused[LATER].message.startswith("4.3.0 ")
    assert reply.startswith("2.0.0 ")
    [stored] = (await api.get("/api/v1/messages")).json()["messages"]
    assert stored["To"] == [{"Name": "", "Address": "bob@example.com"}]


async def test_5xx_recipient_gets_550(sink: RunningSink, api: httpx.AsyncClient) -> None:
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(sink, email(to=NOBODY), recipients=[NOBODY])

    [refusal] = refused.value.recipients
    assert (refusal.code, refusal.message[:6]) == (550, "5.1.1 ")
    assert (await api.get("/api/v1/messages")).json()["total"] == 0


async def test_oversize_message_is_refused_with_552(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    too_big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (MAX_MESSAGE_BYTES // 1000 + 1)

    replies = await session(
        sink,
        b"EHLO client\r\n",
        b"MAIL FROM:<ann@example.com>\r\n",
        b"RCPT TO:<bob@example.com>\r\n",
        b"DATA\r\n",
        too_big + b".\r\n",
        b"MAIL FROM:<ann@example.com> SIZE=" + str(MAX_MESSAGE_BYTES + 1).encode() + b"\r\n",
    )

    assert f"250-SIZE {MAX_MESSAGE_BYTES}" in replies[1]
    assert replies[5].startswith("552 ")
    assert replies[6].startswith("552 ")
    assert (await api.get("/api/v1/messages")).json()["total"] == 0


async def test_smtputf8_addresses_work(sink: RunningSink, api: httpx.AsyncClient) -> None:
    message = EmailMessage()
    message["From"] = "Zoë <zoë@exämple.com>"
    message["To"] = "jürgen@exämple.com"
    message["Subject"] = "Grüße"
    message["Message-ID"] = "<utf8@exämple.com>"
    message.set_content("Schöne Grüße\n")

    await send(sink, message)

    [stored] = (await api.get("/api/v1/messages")).json()["messages"]
    assert stored["From"] == {"Name": "Zoë", "Address": "zoë@exämple.com"}
    assert stored["To"] == [{"Name": "", "Address": "jürgen@exämple.com"}]
    assert stored["Subject"] == "Grüße"
    assert stored["MessageID"] == "utf8@exämple.com"
    assert (await api.get("/api/v1/message/latest")).json()["Text"] == "Schöne Grüße\n"


async def test_garbage_data_is_stored_without_a_traceback(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    garbage = b"\x00\x01\xff\xfe this is not MIME\r\n--\r\n=?broken\r\n"
    replies = await session(
        sink,
        b"EHLO client\r\n",
        b"MAIL FROM:<ann@example.com>\r\n",
        b"RCPT TO:<bob@example.com>\r\n",
        b"DATA\r\n",
        garbage + b".\r\n",
        b"MAIL FROM:<ann@example.com>\r\n",
        b"RCPT TO:<bob@example.com>\r\n",
        b"DATA\r\n",
        b".\r\n",
    )

    assert replies[5].startswith("250 ")
    assert replies[9].startswith("250 ")
    listed = (await api.get("/api/v1/messages")).json()["messages"]
    assert [(m["MessageID"], m["Size"]) for m in listed] == [("", 0), ("", len(garbage))]
    for message in listed:
        assert (await api.get(f"/api/v1/message/{message['ID']}")).status_code == 200
        assert (await api.get(f"/api/v1/message/{message['ID']}/headers")).status_code == 200
    assert "Traceback" not in sink.output()


async def test_protocol_misuse_gets_errors_without_a_traceback(sink: RunningSink) -> None:
    replies = await session(
        sink,
        b"NONSENSE\r\n",
        b"\xff\xfe\r\n",
        b"DATA\r\n",
        b"EHLO client\r\n",
        b"RCPT TO:<bob@example.com>\r\n",
        b"MAIL FROM:\r\n",
        b"MAIL FROM:<ann@example.com>\r\n",
        b"DATA\r\n",
        b"RCPT TO:<>\r\n",
        b"X" * 2000 + b"\r\n",
        b"QUIT\r\n",
    )

    codes = [reply[:3] for reply in replies]
    assert codes == [
        "220",
        "500",
        "500",
        "503",
        "250",
        "503",
        "501",
        "250",
        "503",
        "501",
        "500",
        "221",
    ]
    assert "Traceback" not in sink.output()


async def test_a_client_that_hangs_up_mid_data_leaves_nothing_stored(
    sink: RunningSink, api: httpx.AsyncClient
) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", sink.smtp_port)
    writer.write(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    writer.write(b"Subject: half a message\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.2)

    assert (await api.get("/api/v1/messages")).json()["total"] == 0
    assert (await api.get("/readyz")).status_code == 200
    assert "Traceback" not in sink.output()


async def test_health_probes_answer(sink: RunningSink, api: httpx.AsyncClient) -> None:
    for probe in ("/healthz", "/livez", "/readyz"):
        response = await api.get(probe)

        assert (response.status_code, response.text) == (200, "ok")


async def test_stored_messages_survive_a_sink_restart(tmp_path: Path) -> None:
    with running_sink(tmp_path) as first:
        await send(first, email(subject="before restart", message_id="<kept@example.com>"))
        assert first.stop() == 0

    with running_sink(tmp_path) as second:
        await send(second, email(subject="after restart", message_id="<kept@example.com>"))
        async with httpx.AsyncClient(base_url=second.api) as api:
            listed = (await api.get("/api/v1/messages")).json()["messages"]
            stats = (await api.get("/api/v1/stats")).json()

    assert [(m["Subject"], m["MessageIDCount"]) for m in listed] == [
        ("after restart", 2),
        ("before restart", 1),
    ]
    assert stats == {
        "received": 2,
        "unique_message_ids": 1,
        "duplicates": 1,
        "latency": NO_LATENCIES,
        "max_rate_1s": 1,  # since this sink started: the one email sent to it
    }


async def test_4xx_rate_of_1_refuses_every_message_with_451(tmp_path: Path) -> None:
    with running_sink(tmp_path, SINK_FAIL_4XX_RATE="1") as sink:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(sink, email())
        assert refused.value.code == 451
        assert "--- refused message from ann@example.com" in sink.output()


async def test_5xx_rate_of_1_refuses_every_message_with_550(tmp_path: Path) -> None:
    with running_sink(tmp_path, SINK_FAIL_5XX_RATE="1") as sink:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(sink, email())
        assert refused.value.code == 550
        async with httpx.AsyncClient(base_url=sink.api) as api:
            assert (await api.get("/api/v1/stats")).json()["received"] == 0


async def test_sigterm_with_an_open_smtp_session_exits_0(tmp_path: Path) -> None:
    with running_sink(tmp_path) as sink:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.smtp_port)
        await smtp.connect()
        await smtp.ehlo()

        exit_status = await asyncio.to_thread(sink.stop)

        assert exit_status == 0
        assert "SMTP sink stopped." in sink.output()
        smtp.close()


async def test_a_busy_port_is_one_clear_line_and_exit_1(
    shared_sink: RunningSink, tmp_path: Path
) -> None:
    def start_a_second_sink_on_the_same_smtp_port() -> None:
        with running_sink(tmp_path, SINK_SMTP_PORT=str(shared_sink.smtp_port)):
            pass

    with pytest.raises(AssertionError, match=r"cannot listen for SMTP on 127\.0\.0\.1:"):
        start_a_second_sink_on_the_same_smtp_port()
