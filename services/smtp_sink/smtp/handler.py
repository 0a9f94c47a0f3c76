"""The aiosmtpd handler: answers the simulator addresses as they always answer, refuses what
fault injection says, stores the rest, then answers 250.

The 250 comes only after the store has committed the message: if the sink said 250, it has it.
And only what the sink could answer 250 for stays stored: a client that hangs up while its email
is being stored was never told 250, so it will send that email again (RFC 1047).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, TextIO

from aiosmtpd.smtp import MISSING, SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from services.smtp_sink.api.search import envelope_search_text, search_text
from services.smtp_sink.latency import ACCEPTED_AT_HEADER, accepted_at, latency_seconds
from services.smtp_sink.mailbox import (
    Arrival,
    Envelope,
    Sighting,
    StoredMessage,
    Summary,
    summarize,
    unread_summary,
)
from services.smtp_sink.mime import LARGE_MESSAGE_BYTES, read_message
from services.smtp_sink.simulator.addresses import SimulatorAddresses, is_simulated
from services.smtp_sink.simulator.faults import (
    FaultPolicy,
    authentication_refusal,
    message_refusal,
    rate_limit_refusal,
    recipient_refusal,
    sender_refusal,
)
from services.smtp_sink.smtp.report import arrival_block, refusal_line, sender_refusal_line

# The name on the SMTP side's log lines, whichever of its modules writes them.
log = logging.getLogger("services.smtp_sink.smtp")

PIPELINING_LINE = "250-PIPELINING"
EMPTY_RECIPIENT_REPLY = "501 5.1.3 Bad recipient address syntax: <> is not a recipient"
STORE_FAILED_REPLY = "451 4.3.0 The sink could not store the message, try again later"


class ArrivalStore(Protocol):
    def add(self, arrival: Arrival) -> Awaitable[Sighting]: ...

    async def delete(self, message_ids: Sequence[str] | None) -> int: ...


class ArrivalMetrics(Protocol):
    def mail_from(self) -> None: ...

    def stored(self, sighting: Sighting, latency_seconds: float | None, size: int) -> None: ...

    def rejected(self) -> None: ...


class SinkHandler:
    """aiosmtpd calls handle_EHLO, handle_AUTH, handle_MAIL, handle_RCPT and handle_DATA by name;
    everything else is its default."""

    def __init__(
        self,
        store: ArrivalStore,
        faults: FaultPolicy,
        simulator: SimulatorAddresses,
        draw: Callable[[], float],
        new_id: Callable[[], str],
        clock: Callable[[], datetime],
        out: TextIO,
        metrics: ArrivalMetrics,
    ) -> None:
        self._store = store
        self._faults = faults
        self._simulator = simulator
        self._draw = draw
        self._new_id = new_id
        self._clock = clock
        self._out = out
        self._metrics = metrics
        self._discarding: set[asyncio.Task[None]] = set()
        # The transactions with a slow@ recipient: the seconds their final reply waits. Weak:
        # a transaction reset or cut off before DATA leaves nothing behind.
        self._final_reply_delays: weakref.WeakKeyDictionary[SmtpEnvelope, float] = (
            weakref.WeakKeyDictionary()
        )

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """aiosmtpd's EHLO reply, with PIPELINING (RFC 2920) offered as Mailpit offers it.

        aiosmtpd reads one command line at a time from its buffer and answers each in turn, so a
        group of commands in one write is answered in order, which is all RFC 2920 asks of a
        server.
        """
        session.host_name = hostname  # aiosmtpd leaves it to a handle_EHLO hook
        *extensions, last = responses  # the last line, "250 HELP", ends the reply
        return [*extensions, PIPELINING_LINE, last]

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: SmtpEnvelope, args: list[str]
    ) -> object:
        """Mailpit's Authentication chaos, before the credentials are read; MISSING lets
        aiosmtpd go on to check them."""
        refusal = authentication_refusal(self._faults)
        if refusal is None:
            return MISSING
        self._metrics.rejected()
        return refusal

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        self._metrics.mail_from()
        over_the_limit = rate_limit_refusal(self._faults)
        refusal = over_the_limit or sender_refusal(self._faults)
        if refusal is not None:
            self._metrics.rejected()
            self._print(sender_refusal_line(refusal, address))
            if over_the_limit:
                _hang_up_after_reply(server)
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"  # aiosmtpd's own reply

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not address.strip("<>"):
            # aiosmtpd lets the null reverse-path <> through as a recipient.
            return EMPTY_RECIPIENT_REPLY
        if is_simulated(address):
            # Before any fault: the simulator's replies are the same whatever else is set.
            return self._simulated_rcpt(server, envelope, address, rcpt_options)
        refusal = recipient_refusal(self._faults, address, sender=envelope.mail_from or "")
        if refusal is not None:
            self._metrics.rejected()
            self._print(refusal_line(refusal, _envelope(envelope), recipient=address))
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    def _simulated_rcpt(
        self, server: SMTP, envelope: SmtpEnvelope, address: str, rcpt_options: list[str]
    ) -> str:
        simulated = self._simulator.rcpt(address)
        if not simulated.accepted:
            self._metrics.rejected()
            self._print(refusal_line(simulated.reply, _envelope(envelope), recipient=address))
            if simulated.hang_up:
                _hang_up_after_reply(server)
            return simulated.reply
        if simulated.final_reply_delay_seconds:
            self._final_reply_delays[envelope] = simulated.final_reply_delay_seconds
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return simulated.reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        accepted = _envelope(envelope)
        refusal = message_refusal(self._faults, self._draw())
        # A message only to simulator addresses is theirs to answer, so no fault refuses it.
        if refusal is not None and not all(map(is_simulated, accepted.rcpt_tos)):
            self._metrics.rejected()
            self._print(refusal_line(refusal, accepted))
            return refusal
        if self._final_reply_delays and envelope in self._final_reply_delays:
            # slow@: the final reply comes late, and before the message is stored, so a client
            # that gives up waiting leaves nothing stored, as it was never told 250.
            await asyncio.sleep(self._final_reply_delays.pop(envelope))
        raw = envelope.original_content or b""
        if len(raw) < LARGE_MESSAGE_BYTES:
            summary, text, accepted_time = _read(raw, accepted)
        else:
            summary, text, accepted_time = await asyncio.to_thread(_read, raw, accepted)
        arrival = Arrival(
            id=self._new_id(),
            created=self._clock(),
            envelope=accepted,
            summary=summary,
            raw=raw,
            search_text=text,
        )
        storing = asyncio.ensure_future(self._store.add(arrival))
        try:
            # Shielded: aiosmtpd cancels the session when the client hangs up, but the store
            # goes on to commit, and the copy it commits must then be discarded.
            sighting = await asyncio.shield(storing)
        except asyncio.CancelledError:
            discarding = asyncio.create_task(self._discard_unanswered(storing, arrival.id))
            self._discarding.add(discarding)
            discarding.add_done_callback(self._discarding.discard)
            raise
        except Exception as error:
            log.error("could not store message %s: %s", arrival.id, error)
            return STORE_FAILED_REPLY
        stored = StoredMessage(
            id=arrival.id,
            created=arrival.created,
            envelope=arrival.envelope,
            summary=arrival.summary,
            size=len(raw),
            read=False,
            sighting=sighting,
        )
        self._metrics.stored(
            sighting, latency_seconds(accepted_time, arrival.created), size=len(raw)
        )
        self._print(arrival_block(stored))
        return f"250 2.0.0 OK stored as {arrival.id}"

    async def finish_discards(self) -> None:
        """Wait until the copies of hung-up clients are discarded; before the store closes."""
        await asyncio.gather(*self._discarding)

    async def _discard_unanswered(self, storing: asyncio.Future[Sighting], id_: str) -> None:
        try:
            await storing
        except Exception:
            return  # never stored: nothing to discard
        try:
            await self._store.delete([id_])
        except Exception as error:
            log.error("could not discard message %s, stored but never answered: %s", id_, error)
            return
        log.warning(
            "the client hung up before the sink could answer 250; discarded message %s "
            "(the client was not told it was delivered and will send it again)",
            id_,
        )

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would log a traceback per failed session; one line says enough.
        log.error("SMTP session error: %r", error, exc_info=log.isEnabledFor(logging.DEBUG))
        return "451 4.3.0 The sink failed to handle the command, try again later"

    def _print(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


def _hang_up_after_reply(server: SMTP) -> None:
    """Close the connection once the reply the hook returns has been sent (RFC 5321 3.8: a 421
    closes it). aiosmtpd writes that reply before it next awaits, and a transport that closes
    sends what it holds first."""
    transport = server.transport
    if transport is not None:
        asyncio.get_running_loop().call_soon(transport.close)


def _read(raw: bytes, envelope: Envelope) -> tuple[Summary, str, datetime | None]:
    """The summary, the search text and the acceptance time (X-Accepted-At) of a message."""
    try:
        parsed = read_message(raw)
        return (
            summarize(parsed, envelope),
            search_text(parsed),
            accepted_at(parsed.header(ACCEPTED_AT_HEADER)),
        )
    except Exception as error:
        # A witness keeps what it was given, even what it cannot read.
        log.warning("could not read the message, storing it unread: %r", error)
        return unread_summary(envelope), envelope_search_text(envelope), None


def _envelope(envelope: SmtpEnvelope) -> Envelope:
    return Envelope(mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos))
