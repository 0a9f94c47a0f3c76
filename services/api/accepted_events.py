"""What the API does once Kafka has acknowledged an email, before its 202: the email's `accepted`
event goes into the read model at once, so that `GET /emails/{id}` right after the 202 finds the
email whichever API process answers it, and to the events topic, without waiting for Kafka."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from services.api.email_queue import Queued
from services.api.status_store import EventRow, StatusStore, StatusStoreUnavailable
from shared.events import ProducerRecord, accepted_event
from shared.schema import EmailRecord

log = logging.getLogger("api.status")


class EventPublisher(Protocol):
    def publish_event(self, event: ProducerRecord) -> None: ...


class AcceptedEvents:
    def __init__(self, store: StatusStore, publisher: EventPublisher) -> None:
        self._store = store
        self._publisher = publisher

    async def write(self, queued: Sequence[tuple[EmailRecord, Queued]]) -> None:
        """The `accepted` event of each email, as the worker makes it too (same id, same
        bytes): produced, and kept in the read model in one transaction. A read model that
        fails is a warning, never a failed 202: the status consumer keeps the event when it
        reads it from the topic."""
        rows = []
        for email, position in queued:
            try:
                event = accepted_event(email, position)
            except ValueError as error:  # a bug: the email passed the API's own checks
                log.error("cannot make the accepted event of %s: %s", email.message_id, error)
                continue
            record = event.to_kafka()
            self._publisher.publish_event(record)
            rows.append(EventRow.of(event, record.value, position=None))
        if not rows:
            return
        try:
            await self._store.add(rows)
        except StatusStoreUnavailable as error:
            log.warning(
                "could not write the accepted event of %d email(s) into the read model (%s): "
                "GET /emails/{id} finds them once the status consumer has read the events",
                len(rows), error,
            )  # fmt: skip
