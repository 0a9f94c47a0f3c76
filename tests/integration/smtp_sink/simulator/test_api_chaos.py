"""Mailpit's chaos on the real sink: triggers set over HTTP fail SMTP steps at once, as Mailpit's
do, while the recipients listed in SINK_FAIL_4XX/5XX_RECIPIENTS keep failing as listed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiosmtplib
import httpx
import pytest

from services.smtp_sink.simulator.faults import PERMANENT_RECIPIENT_REPLY, TRANSIENT_RECIPIENT_REPLY
from tests.integration.smtp_sink.conftest import LATER, NOBODY, RunningSink, email, send

RECIPIENTS = 200


@pytest.fixture
async def chaos(api: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The API, with every trigger switched off again after the test."""
    yield api
    (await api.put("/api/v1/chaos", json={})).raise_for_status()


async def test_a_recipient_trigger_at_100_fails_every_rcpt_with_its_code(
    sink: RunningSink, chaos: httpx.AsyncClient
) -> None:
    answer = await chaos.put(
        "/api/v1/chaos", json={"Recipient": {"ErrorCode": 452, "Probability": 100}}
    )
    assert answer.status_code == 200, answer.text

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(sink, email(to="bob@example.com"))

    [refusal] = refused.value.recipients
    assert (refusal.code, refusal.message) == (452, "Chaos recipient error")
    assert (await chaos.get("/api/v1/messages")).json()["total"] == 0


async def test_a_recipient_trigger_at_50_fails_about_half_the_rcpts(
    sink: RunningSink, chaos: httpx.AsyncClient
) -> None:
    await chaos.put("/api/v1/chaos", json={"Recipient": {"ErrorCode": 451, "Probability": 50}})
    recipients = [f"r{n}@example.com" for n in range(RECIPIENTS)]

    refused, _ = await aiosmtplib.send(
        email(to="list@example.com"),
        recipients=recipients,
        hostname="127.0.0.1",
        port=sink.smtp_port,
    )

    assert {(reply.code, reply.message) for reply in refused.values()} == {
        (451, "Chaos recipient error")
    }
    # Binomial(200, 0.5): 100 +- 7; outside 60..140 is a chance under one in 10^8.
    assert 60 <= len(refused) <= RECIPIENTS - 60
    [stored] = (await chaos.get("/api/v1/messages")).json()["messages"]
    assert {bcc["Address"] for bcc in stored["Bcc"]} == set(recipients) - set(refused)


async def test_listed_recipients_fail_as_listed_whatever_the_trigger(
    sink: RunningSink, chaos: httpx.AsyncClient
) -> None:
    await chaos.put("/api/v1/chaos", json={"Recipient": {"ErrorCode": 421, "Probability": 100}})

    for listed, reply in ((LATER, TRANSIENT_RECIPIENT_REPLY), (NOBODY, PERMANENT_RECIPIENT_REPLY)):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(sink, email(to=listed))
        [refusal] = refused.value.recipients
        assert f"{refusal.code} {refusal.message}" == reply


async def test_triggers_switched_off_accept_everything_again(
    sink: RunningSink, chaos: httpx.AsyncClient
) -> None:
    await chaos.put("/api/v1/chaos", json={"Recipient": {"ErrorCode": 451, "Probability": 100}})
    await chaos.put("/api/v1/chaos", json={})

    assert (await send(sink, email())).startswith("2.0.0 OK stored as ")


async def test_a_put_it_cannot_take_leaves_the_triggers_working(
    sink: RunningSink, chaos: httpx.AsyncClient
) -> None:
    await chaos.put("/api/v1/chaos", json={"Recipient": {"ErrorCode": 451, "Probability": 100}})

    refused = await chaos.put(
        "/api/v1/chaos", json={"Recipient": {"ErrorCode": 451, "Probability": 1000}}
    )

    assert (refused.status_code, refused.text) == (
        400,
        "Recipient: Probability must be between 0 and 100, not 1000",
    )
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await send(sink, email())


async def test_a_sender_trigger_fails_mail_from_as_mailpits_does(
    sink: RunningSink, chaos: httpx.AsyncClient
) -> None:
    await chaos.put("/api/v1/chaos", json={"Sender": {"ErrorCode": 451, "Probability": 100}})

    with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
        await send(sink, email())

    assert (refused.value.code, refused.value.message) == (451, "Chaos sender error")
    assert "--- refused MAIL from ann@example.com: 451 Chaos sender error" in sink.output()
