"""The SMTP handler with a fake store: 250 only once stored, faults refuse, store errors are 451."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from aiosmtpd.smtp import MISSING, SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from services.smtp_sink.mailbox import Arrival, Sighting
from services.smtp_sink.simulator.faults import (
    PERMANENT_MESSAGE_REPLY,
    TRANSIENT_RECIPIENT_REPLY,
    Chaos,
    ChaosTrigger,
    ChaosTriggers,
    FaultPolicy,
)
from services.smtp_sink.smtp.handler import STORE_FAILED_REPLY, SinkHandler
from tests.unit.smtp_sink.messages import PLAIN

NOW = datetime(2025, 11, 25, 18, 30, tzinfo=UTC)


class FakeMetrics:
    def __init__(self) -> None:
        self.recorded: list[tuple[Sighting, float | None]] = []
        self.sizes: list[int] = []
        self.rejections = 0

    def stored(self, sighting: Sighting, latency_seconds: float | None, size: int) -> None:
        self.recorded.append((sighting, latency_seconds))
        self.sizes.append(size)

    def rejected(self) -> None:
        self.rejections += 1


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.arrivals: list[Arrival] = []
        self.fail = fail
        self.committing = asyncio.Event()
        self.committing.set()
        self.deleted: list[str] = []

    async def add(self, arrival: Arrival) -> Sighting:
        await self.committing.wait()
        if self.fail:
            raise OSError("disk full")
        earlier = sum(
            1 for a in self.arrivals if a.summary.message_id == arrival.summary.message_id
        )
        self.arrivals.append(arrival)
        return Sighting(earlier + 1)

    async def delete(self, message_ids: Sequence[str] | None) -> int:
        assert message_ids is not None
        self.deleted.extend(message_ids)
        kept = [a for a in self.arrivals if a.id not in message_ids]
        deleted, self.arrivals = len(self.arrivals) - len(kept), kept
        return deleted


def handler(
    store: FakeStore,
    faults: FaultPolicy | None = None,
    draw: float = 0.5,
    out: io.StringIO | None = None,
    metrics: FakeMetrics | None = None,
) -> SinkHandler:
    ids = (f"id-{n}" for n in itertools.count(1))
    return SinkHandler(
        store=store,
        faults=faults or FaultPolicy.of(),
        draw=lambda: draw,
        new_id=lambda: next(ids),
        clock=lambda: NOW,
        out=out or io.StringIO(),
        metrics=metrics or FakeMetrics(),
    )


def envelope(
    raw: bytes = PLAIN, recipients: tuple[str, ...] = ("bob@example.com",)
) -> SmtpEnvelope:
    smtp_envelope = SmtpEnvelope()
    smtp_envelope.mail_from = "ann@example.com"
    smtp_envelope.rcpt_tos = list(recipients)
    smtp_envelope.original_content = raw
    smtp_envelope.content = raw
    return smtp_envelope


# The handler never touches the server or the session.
SERVER = cast(SMTP, object())
SESSION = Session(loop=cast(asyncio.AbstractEventLoop, None))


async def test_message_is_stored_before_250_is_answered() -> None:
    store = FakeStore()

    reply = await handler(store).handle_DATA(SERVER, SESSION, envelope())

    assert reply == "250 2.0.0 OK stored as id-1"
    [arrival] = store.arrivals
    assert arrival.raw == PLAIN
    assert arrival.created == NOW
    assert arrival.envelope.rcpt_tos == ("bob@example.com",)
    assert arrival.summary.message_id == "plain-1@example.com"


async def test_store_failure_is_a_transient_451() -> None:
    reply = await handler(FakeStore(fail=True)).handle_DATA(SERVER, SESSION, envelope())

    assert reply == STORE_FAILED_REPLY
    assert reply.startswith("451 ")


async def test_each_stored_message_is_printed_and_a_duplicate_flagged() -> None:
    out = io.StringIO()
    sink = handler(FakeStore(), out=out)

    await sink.handle_DATA(SERVER, SESSION, envelope())
    await sink.handle_DATA(SERVER, SESSION, envelope())

    printed = out.getvalue()
    assert printed.count("=== ") == 2
    assert printed.count("!!! DUPLICATE Message-ID <plain-1@example.com> (seen 2 times)") == 1


async def test_listed_recipient_is_refused_and_not_added() -> None:
    smtp_envelope = envelope(recipients=())
    sink = handler(FakeStore(), FaultPolicy.of(transient_recipients=["later@example.com"]))

    refused = await sink.handle_RCPT(SERVER, SESSION, smtp_envelope, "later@example.com", [])
    accepted = await sink.handle_RCPT(SERVER, SESSION, smtp_envelope, "bob@example.com", [])

    assert refused == TRANSIENT_RECIPIENT_REPLY
    assert accepted.startswith("250 ")
    assert smtp_envelope.rcpt_tos == ["bob@example.com"]


async def test_the_null_address_is_not_a_recipient() -> None:
    smtp_envelope = envelope(recipients=())

    reply = await handler(FakeStore()).handle_RCPT(SERVER, SESSION, smtp_envelope, "<>", [])

    assert reply.startswith("501 5.1.3 ")
    assert smtp_envelope.rcpt_tos == []


async def test_a_message_drawn_for_failure_is_refused_and_not_stored() -> None:
    store = FakeStore()
    sink = handler(store, FaultPolicy.of(permanent_rate=0.5), draw=0.25)

    reply = await sink.handle_DATA(SERVER, SESSION, envelope())

    assert reply == PERMANENT_MESSAGE_REPLY
    assert store.arrivals == []


async def test_garbage_is_stored_without_an_error() -> None:
    store = FakeStore()

    reply = await handler(store).handle_DATA(SERVER, SESSION, envelope(b"\x00\xff\xfe garbage"))

    assert reply.startswith("250 ")
    assert store.arrivals[0].raw == b"\x00\xff\xfe garbage"


async def test_session_errors_get_a_451_reply() -> None:
    reply = await handler(FakeStore()).handle_exception(RuntimeError("boom"))

    assert reply.startswith("451 ")


async def test_a_message_whose_client_hung_up_before_its_250_is_discarded() -> None:
    # The client dies while the sink commits its email: it was never told 250 and will send
    # the email again, so the copy committed now must not stay (it would be a duplicate).
    store = FakeStore()
    store.committing.clear()
    sink = handler(store)
    session = asyncio.create_task(sink.handle_DATA(SERVER, SESSION, envelope()))
    await asyncio.sleep(0)

    session.cancel()  # what aiosmtpd does when the connection closes
    await asyncio.sleep(0)
    store.committing.set()  # the commit in progress completes all the same
    await sink.finish_discards()

    assert session.cancelled()
    assert store.deleted == ["id-1"]
    assert store.arrivals == []


async def test_a_message_that_failed_to_store_needs_no_discard() -> None:
    store = FakeStore(fail=True)
    store.committing.clear()
    sink = handler(store)
    session = asyncio.create_task(sink.handle_DATA(SERVER, SESSION, envelope()))
    await asyncio.sleep(0)

    session.cancel()
    await asyncio.sleep(0)
    store.committing.set()
    await sink.finish_discards()

    assert session.cancelled()
    assert store.deleted == []


async def test_a_stored_message_is_counted_with_its_latency_from_x_accepted_at() -> None:
    metrics = FakeMetrics()
    accepted = b"X-Accepted-At: 2025-11-25T18:29:59.750000+00:00\r\n" + PLAIN

    await handler(FakeStore(), metrics=metrics).handle_DATA(SERVER, SESSION, envelope(accepted))
    await handler(FakeStore(), metrics=metrics).handle_DATA(SERVER, SESSION, envelope())

    assert metrics.recorded == [(Sighting(1), 0.25), (Sighting(1), None)]


async def test_a_refused_or_unstored_message_is_not_counted() -> None:
    metrics = FakeMetrics()

    await handler(FakeStore(fail=True), metrics=metrics).handle_DATA(SERVER, SESSION, envelope())
    await handler(FakeStore(), FaultPolicy.of(permanent_rate=1.0), metrics=metrics).handle_DATA(
        SERVER, SESSION, envelope()
    )

    assert metrics.recorded == []


async def test_the_arrival_carries_its_search_text() -> None:
    store = FakeStore()

    await handler(store).handle_DATA(SERVER, SESSION, envelope())

    [arrival] = store.arrivals
    assert "hello bob" in arrival.search_text
    assert "first line of the body" in arrival.search_text


def chaos(triggers: ChaosTriggers) -> FaultPolicy:
    live = Chaos(draw=lambda: 0.0)
    live.triggers = triggers
    return FaultPolicy.of(chaos=live)


async def test_a_sender_trigger_refuses_mail_from_with_its_code() -> None:
    out, metrics = io.StringIO(), FakeMetrics()
    sink = handler(
        FakeStore(), chaos(ChaosTriggers(sender=ChaosTrigger(421, 100))), out=out, metrics=metrics
    )
    smtp_envelope = SmtpEnvelope()

    reply = await sink.handle_MAIL(SERVER, SESSION, smtp_envelope, "ann@example.com", [])

    assert reply == "421 Chaos sender error"
    assert smtp_envelope.mail_from is None
    assert "refused MAIL from ann@example.com: 421 Chaos sender error" in out.getvalue()
    assert metrics.rejections == 1


async def test_without_a_sender_trigger_mail_from_is_aiosmtpds_own() -> None:
    smtp_envelope = SmtpEnvelope()

    reply = await handler(FakeStore()).handle_MAIL(
        SERVER, SESSION, smtp_envelope, "ann@example.com", ["BODY=8BITMIME"]
    )

    assert reply == "250 OK"
    assert (smtp_envelope.mail_from, smtp_envelope.mail_options) == (
        "ann@example.com",
        ["BODY=8BITMIME"],
    )


async def test_an_authentication_trigger_refuses_auth_before_the_credentials() -> None:
    refusing = handler(FakeStore(), chaos(ChaosTriggers(authentication=ChaosTrigger(454, 100))))

    assert await refusing.handle_AUTH(SERVER, SESSION, SmtpEnvelope(), ["PLAIN"]) == (
        "454 Chaos authentication error"
    )
    assert await handler(FakeStore()).handle_AUTH(SERVER, SESSION, SmtpEnvelope(), ["PLAIN"]) is (
        MISSING
    )


async def test_refusals_are_counted_and_stored_sizes_recorded() -> None:
    metrics = FakeMetrics()
    faults = FaultPolicy.of(transient_recipients=["later@example.com"])
    sink = handler(FakeStore(), faults, metrics=metrics)

    await sink.handle_RCPT(SERVER, SESSION, envelope(recipients=()), "later@example.com", [])
    await sink.handle_DATA(SERVER, SESSION, envelope())

    assert (metrics.rejections, metrics.sizes) == (1, [len(PLAIN)])
