"""The simulator addresses on the real sink, over aiosmtplib and a raw socket: each answers as
docs/sink.md says, on a plain sink and on one with every recipient and message fault, greylisting
of their domain and a Recipient chaos trigger at 100 %; and SINK_RATE_LIMIT with max_rate_1s."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import aiosmtplib
import httpx
import pytest

from services.smtp_sink.simulator.addresses import (
    BOUNCED_REPLY,
    DEFERRED_REPLY,
    RATE_LIMITED_REPLY,
    UNKNOWN_REPLY,
)
from tests.integration.smtp_sink.conftest import RawSmtp, RunningSink, email, running_sink, send

DOMAIN = "@simulator.example.com"
SLOW_SECONDS = 1.0
EVERY_FAULT = {
    "SINK_FAIL_4XX_RECIPIENTS": f"delivered{DOMAIN},slow{DOMAIN}",
    "SINK_FAIL_5XX_RECIPIENTS": f"delivered{DOMAIN},deferred{DOMAIN},ratelimited{DOMAIN}",
    "SINK_FAIL_5XX_RATE": "1",
    "SINK_GREYLIST_DOMAINS": "simulator.example.com",
    "SINK_GREYLIST_SECONDS": "300",
}
RECIPIENT_CHAOS = {"Recipient": {"ErrorCode": 452, "Probability": 100}}


@pytest.fixture(scope="module", params=["plain", "every fault on"])
def simulator_sink(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSink]:
    faults = EVERY_FAULT if request.param == "every fault on" else {}
    with running_sink(
        tmp_path_factory.mktemp("simulator"),
        SINK_SIMULATOR_SLOW_SECONDS=str(SLOW_SECONDS),
        **faults,
    ) as sink:
        if faults:
            httpx.put(f"{sink.api}/api/v1/chaos", json=RECIPIENT_CHAOS).raise_for_status()
        yield sink


def fresh(local_part: str) -> str:
    """A simulator address no other test has used: a +tag makes it distinct."""
    return f"{local_part}+{uuid.uuid4().hex[:12]}{DOMAIN}"


async def stored_for(sink: RunningSink, recipient: str) -> int:
    async with httpx.AsyncClient(base_url=sink.api) as api:
        found = await api.get("/api/v1/search", params={"query": f'to:"{recipient}"'})
        count: int = found.json()["messages_count"]
        return count


async def refusal(sink: RunningSink, recipient: str) -> tuple[int, str]:
    """The RCPT reply of an email to recipient alone, which must be refused."""
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(sink, email(to=recipient))
    [reply] = refused.value.recipients
    return reply.code, reply.message


def reply_text(reply: str) -> tuple[int, str]:
    code, _, text = reply.partition(" ")
    return int(code), text


async def test_delivered_is_stored(simulator_sink: RunningSink) -> None:
    recipient = fresh("delivered")

    reply = await send(simulator_sink, email(to=recipient))

    assert reply.startswith("2.0.0 OK stored as ")
    assert await stored_for(simulator_sink, recipient) == 1


async def test_delivered_listed_in_the_fail_settings_is_stored_all_the_same(
    simulator_sink: RunningSink,
) -> None:
    # On the faulty sink, delivered@ is in SINK_FAIL_4XX_RECIPIENTS and SINK_FAIL_5XX_RECIPIENTS.
    reply = await send(simulator_sink, email(to=f"delivered{DOMAIN}"))

    assert reply.startswith("2.0.0 OK stored as ")


async def test_an_ordinary_recipient_meets_the_faults_the_simulator_escapes(
    simulator_sink: RunningSink, request: pytest.FixtureRequest
) -> None:
    faulty = request.node.callspec.params["simulator_sink"] == "every fault on"

    if faulty:
        assert await refusal(simulator_sink, "bob@example.com") == (452, "Chaos recipient error")
    else:
        assert (await send(simulator_sink, email(to="bob@example.com"))).startswith("2.0.0 ")


async def test_deferred_is_refused_with_450_once_then_delivered(
    simulator_sink: RunningSink,
) -> None:
    recipient = fresh("deferred")

    first_try = await refusal(simulator_sink, recipient)
    retry = await send(simulator_sink, email(to=recipient))

    assert first_try == reply_text(DEFERRED_REPLY)
    assert retry.startswith("2.0.0 OK stored as ")
    assert await stored_for(simulator_sink, recipient) == 1


async def test_the_plain_deferred_address_is_deferred_once_too(
    simulator_sink: RunningSink,
) -> None:
    first_try = await refusal(simulator_sink, f"deferred{DOMAIN}")

    assert first_try == reply_text(DEFERRED_REPLY)
    assert (await send(simulator_sink, email(to=f"DEFERRED{DOMAIN}"))).startswith("2.0.0 ")


async def test_bounced_is_refused_with_550_5_1_1_every_time_and_counted(
    simulator_sink: RunningSink,
) -> None:
    recipient = fresh("bounced")
    async with httpx.AsyncClient(base_url=simulator_sink.api) as api:
        rejected_before = (await api.get("/api/v1/info")).json()["RuntimeStats"]["SMTPRejected"]

        tries = [await refusal(simulator_sink, recipient) for _ in range(2)]

        rejected = (await api.get("/api/v1/info")).json()["RuntimeStats"]["SMTPRejected"]
    assert tries == [reply_text(BOUNCED_REPLY)] * 2
    assert rejected - rejected_before == 2
    assert f"--- refused RCPT from ann@example.com to {recipient}: {BOUNCED_REPLY}" in (
        simulator_sink.output()
    )


async def test_an_unknown_simulator_address_is_told_which_there_are(
    simulator_sink: RunningSink,
) -> None:
    assert await refusal(simulator_sink, fresh("nobody")) == reply_text(UNKNOWN_REPLY)


async def test_slow_answers_the_final_dot_late_and_stores_the_message(
    simulator_sink: RunningSink,
) -> None:
    recipient = fresh("slow")
    started = time.monotonic()

    reply = await send(simulator_sink, email(to=recipient))

    assert time.monotonic() - started >= SLOW_SECONDS
    assert reply.startswith("2.0.0 OK stored as ")
    assert await stored_for(simulator_sink, recipient) == 1


async def test_a_client_that_stops_waiting_for_slow_leaves_nothing_stored(
    simulator_sink: RunningSink,
) -> None:
    recipient = fresh("slow")

    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        await send(simulator_sink, email(to=recipient), timeout=SLOW_SECONDS / 4)
    await asyncio.sleep(SLOW_SECONDS + 0.5)

    assert await stored_for(simulator_sink, recipient) == 0


async def test_ratelimited_above_five_a_second_is_421_and_the_sink_hangs_up(
    simulator_sink: RunningSink,
) -> None:
    async with RawSmtp(simulator_sink) as smtp:
        await smtp.command("EHLO client.example.com")
        await smtp.command("MAIL FROM:<ann@example.com>")
        # All six at once, so that they fall in one second however busy the machine is.
        replies = await smtp.commands(
            *(f"RCPT TO:<{fresh('ratelimited')}>" for _ in range(5)),
            f"RCPT TO:<ratelimited{DOMAIN}>",
        )
        closed = await smtp.closed_by_the_sink()

    assert replies == ["250 2.1.5 OK"] * 5 + [RATE_LIMITED_REPLY]
    assert closed


async def test_the_sink_says_at_start_what_the_simulator_answers(
    simulator_sink: RunningSink,
) -> None:
    assert (
        "simulator addresses at simulator.example.com: delivered (250), deferred (450 on the "
        "first try of each), bounced (550 5.1.1), slow (1 s before the final reply), "
        "ratelimited (421 above 5 a second)"
    ) in simulator_sink.output()


# SINK_RATE_LIMIT: the whole sink as a relay with a limit of 3 emails a second.


@pytest.fixture(scope="module")
def limited_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
    with running_sink(tmp_path_factory.mktemp("limited"), SINK_RATE_LIMIT="3") as sink:
        yield sink


async def max_rate_1s(sink: RunningSink) -> int:
    async with httpx.AsyncClient(base_url=sink.api) as api:
        peak: int = (await api.get("/api/v1/stats")).json()["max_rate_1s"]
        return peak


async def test_mail_from_above_the_rate_limit_is_421_and_counted_in_max_rate_1s(
    limited_sink: RunningSink,
) -> None:
    async with httpx.AsyncClient(base_url=limited_sink.api) as api:
        (await api.delete("/api/v1/messages")).raise_for_status()  # max_rate_1s starts over
    assert await max_rate_1s(limited_sink) == 0

    async with RawSmtp(limited_sink) as smtp:
        await smtp.command("EHLO client.example.com")
        replies = await smtp.commands(
            *("MAIL FROM:<ann@example.com>", "RSET") * 3, "MAIL FROM:<ann@example.com>"
        )
        closed = await smtp.closed_by_the_sink()
    peak = await max_rate_1s(limited_sink)
    await asyncio.sleep(1.1)
    a_second_later = await send(limited_sink, email())

    assert replies[::2] == ["250 OK"] * 3 + [
        "421 4.7.0 Rate limit exceeded: more than 3 emails a second, slow down"
    ]
    assert closed
    assert peak == 4, "the refused MAIL FROM counts: the client sent it"
    assert a_second_later.startswith("2.0.0 OK stored as ")
    assert "rate limit: above 3 emails in any second" in limited_sink.output()


async def test_a_client_within_the_limit_shows_a_peak_within_it(
    limited_sink: RunningSink,
) -> None:
    await asyncio.sleep(1.1)  # after any earlier test's emails
    async with httpx.AsyncClient(base_url=limited_sink.api) as api:
        (await api.delete("/api/v1/messages")).raise_for_status()

    for _ in range(3):
        await send(limited_sink, email())
    await asyncio.sleep(1.05)
    await send(limited_sink, email())

    assert 1 <= await max_rate_1s(limited_sink) <= 3
