"""The SMTP handler with a fake store: 250 only once stored, faults refuse, store errors are 451;
the simulator addresses answer before any fault, and a 421 closes the connection."""

from __future__ import annotations

import asyncio
import io
import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import cast

from aiosmtpd.smtp import MISSING, SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from services.smtp_sink.mailbox import Arrival, Sighting
from services.smtp_sink.simulator.addresses import (
    ACCEPTED_REPLY,
    BOUNCED_REPLY,
    DEFERRED_REPLY,
    RATE_LIMITED_REPLY,
    SimulatorAddresses,
)
from services.smtp_sink.simulator.faults import (
    PERMANENT_MESSAGE_REPLY,
    TRANSIENT_RECIPIENT_REPLY,
    Chaos,
    ChaosTrigger,
    ChaosTriggers,
    FaultPolicy,
)
from services.smtp_sink.simulator.greylist import Greylist
from services.smtp_sink.simulator.rate_limit import RateLimit
from services.smtp_sink.smtp.handler import STORE_FAILED_REPLY, SinkHandler
from tests.unit.smtp_sink.messages import PLAIN

NOW = datetime(2025, 11, 25, 18, 30, tzinfo=UTC)
ANN = "ann@example.com"
DOMAIN = "@simulator.example.com"


class FakeMetrics:
    def __init__(self) -> None:
        self.recorded: list[tuple[Sighting, float | None]] = []
        self.sizes: list[int] = []
        self.rejections = 0
        self.mail_froms = 0

    def mail_from(self) -> None:
        self.mail_froms += 1

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
    simulator: SimulatorAddresses | None = None,
) -> SinkHandler:
    ids = (f"id-{n}" for n in itertools.count(1))
    return SinkHandler(
        store=store,
        faults=faults or FaultPolicy.of(),
        simulator=simulator or SimulatorAddresses(),
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


async def test_ehlo_offers_pipelining_and_keeps_the_reply_aiosmtpd_made() -> None:
    session = Session(loop=cast(asyncio.AbstractEventLoop, None))
    made = ["250-smtp-sink", "250-SIZE 1024", "250-8BITMIME", "250 HELP"]

    reply = await handler(FakeStore()).handle_EHLO(
        SERVER, session, SmtpEnvelope(), "client.example", list(made)
    )

    assert reply == [*made[:-1], "250-PIPELINING", "250 HELP"]
    assert session.host_name == "client.example", "EHLO was said: MAIL may follow"


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


class FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def server_with(transport: FakeTransport) -> SMTP:
    """An aiosmtpd session as far as the handler touches it: to close its connection."""
    server = SimpleNamespace(transport=transport)
    return cast(SMTP, server)


DELIVERED, BOUNCED = "delivered@simulator.example.com", "bounced+1@simulator.example.com"


def every_fault() -> FaultPolicy:
    """Every recipient and message fault on, for the simulator's own domain too."""
    live = Chaos(draw=lambda: 0.0)
    live.triggers = ChaosTriggers(recipient=ChaosTrigger(451, 100))
    return FaultPolicy.of(
        transient_recipients=[DELIVERED],
        permanent_recipients=[DELIVERED, "deferred@simulator.example.com"],
        transient_rate=1.0,
        chaos=live,
        greylist=Greylist(["simulator.example.com"], 300),
    )


async def test_simulator_addresses_answer_the_same_whatever_faults_are_set() -> None:
    for faults in (FaultPolicy.of(), every_fault()):
        smtp_envelope = envelope(recipients=())
        sink = handler(FakeStore(), faults)

        replies = [
            await sink.handle_RCPT(SERVER, SESSION, smtp_envelope, address, [])
            for address in (
                DELIVERED,
                BOUNCED,
                "deferred@simulator.example.com",
                "deferred@simulator.example.com",
            )
        ]

        assert replies == [ACCEPTED_REPLY, BOUNCED_REPLY, DEFERRED_REPLY, ACCEPTED_REPLY]
        assert smtp_envelope.rcpt_tos == [DELIVERED, "deferred@simulator.example.com"]


async def test_a_simulated_refusal_is_counted_and_printed() -> None:
    out, metrics = io.StringIO(), FakeMetrics()
    sink = handler(FakeStore(), out=out, metrics=metrics)

    await sink.handle_RCPT(SERVER, SESSION, envelope(recipients=()), BOUNCED, [])

    assert metrics.rejections == 1
    assert f"refused RCPT from ann@example.com to {BOUNCED}: {BOUNCED_REPLY}" in out.getvalue()


async def test_ratelimited_over_its_limit_is_421_and_the_connection_closes_after_it() -> None:
    transport = FakeTransport()
    server = server_with(transport)
    sink = handler(FakeStore())
    smtp_envelope = envelope(recipients=())

    within = [
        await sink.handle_RCPT(server, SESSION, smtp_envelope, f"ratelimited+{n}{DOMAIN}", [])
        for n in range(5)
    ]
    over = await sink.handle_RCPT(server, SESSION, smtp_envelope, f"ratelimited{DOMAIN}", [])
    closed_before_the_reply_went = transport.closed
    await asyncio.sleep(0)

    assert within == [ACCEPTED_REPLY] * 5
    assert over == RATE_LIMITED_REPLY
    assert not closed_before_the_reply_went, "aiosmtpd writes the reply after the hook returns"
    assert transport.closed


async def test_a_message_only_to_simulator_addresses_escapes_message_faults() -> None:
    store = FakeStore()
    sink = handler(store, FaultPolicy.of(permanent_rate=1.0), draw=0.0)

    simulated = await sink.handle_DATA(SERVER, SESSION, envelope(recipients=(DELIVERED,)))
    mixed = await sink.handle_DATA(
        SERVER, SESSION, envelope(recipients=(DELIVERED, "bob@example.com"))
    )

    assert simulated.startswith("250 ")
    assert mixed == PERMANENT_MESSAGE_REPLY
    assert len(store.arrivals) == 1


async def test_slow_answers_the_final_dot_late_and_stores_only_then() -> None:
    store = FakeStore()
    sink = handler(store, simulator=SimulatorAddresses(slow_seconds=0.2))
    smtp_envelope = envelope(recipients=())
    await sink.handle_RCPT(SERVER, SESSION, smtp_envelope, f"slow{DOMAIN}", [])
    started = time.monotonic()

    answering = asyncio.create_task(sink.handle_DATA(SERVER, SESSION, smtp_envelope))
    await asyncio.sleep(0.1)
    stored_meanwhile = len(store.arrivals)
    reply = await answering

    assert time.monotonic() - started >= 0.2
    assert stored_meanwhile == 0
    assert reply.startswith("250 ")
    assert len(store.arrivals) == 1


async def test_a_client_that_gives_up_on_slow_leaves_nothing_stored() -> None:
    store = FakeStore()
    sink = handler(store, simulator=SimulatorAddresses(slow_seconds=5))
    smtp_envelope = envelope(recipients=())
    await sink.handle_RCPT(SERVER, SESSION, smtp_envelope, f"slow{DOMAIN}", [])

    answering = asyncio.create_task(sink.handle_DATA(SERVER, SESSION, smtp_envelope))
    await asyncio.sleep(0.01)
    answering.cancel()  # what aiosmtpd does when the client hangs up
    await asyncio.gather(answering, return_exceptions=True)
    await sink.finish_discards()

    assert answering.cancelled()
    assert store.arrivals == []


async def test_only_the_transaction_with_slow_waits() -> None:
    sink = handler(FakeStore(), simulator=SimulatorAddresses(slow_seconds=5))
    await sink.handle_RCPT(SERVER, SESSION, envelope(recipients=()), f"slow{DOMAIN}", [])

    reply = await asyncio.wait_for(
        sink.handle_DATA(SERVER, SESSION, envelope(recipients=(DELIVERED,))), timeout=1
    )

    assert reply.startswith("250 ")


async def test_mail_from_over_the_rate_limit_is_421_and_the_connection_closes() -> None:
    now = [0.0]
    transport, out, metrics = FakeTransport(), io.StringIO(), FakeMetrics()
    faults = FaultPolicy.of(rate_limit=RateLimit(2, clock=lambda: now[0]))
    sink = handler(FakeStore(), faults, out=out, metrics=metrics)
    server = server_with(transport)

    replies = []
    for moment in (0.0, 0.5, 0.9, 1.0):
        now[0] = moment
        replies.append(await sink.handle_MAIL(server, SESSION, SmtpEnvelope(), ANN, []))
    await asyncio.sleep(0)

    over = "421 4.7.0 Rate limit exceeded: more than 2 emails a second, slow down"
    assert replies == ["250 OK", "250 OK", over, "250 OK"]
    assert transport.closed
    assert (metrics.mail_froms, metrics.rejections) == (4, 1)
    assert f"refused MAIL from {ANN}: {over}" in out.getvalue()


async def test_a_sender_chaos_refusal_keeps_the_connection_open() -> None:
    transport = FakeTransport()
    sink = handler(FakeStore(), chaos(ChaosTriggers(sender=ChaosTrigger(421, 100))))

    await sink.handle_MAIL(server_with(transport), SESSION, SmtpEnvelope(), ANN, [])
    await asyncio.sleep(0)

    assert not transport.closed  # as Mailpit's chaos: only the sink's own limits hang up
