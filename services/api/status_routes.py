"""`GET /emails/{id}`: an email's status, each recipient's state and the history of its events,
from the read model that the status consumer builds (status_projector.py)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from services.api.errors import problem
from services.api.routes import RETRY_AFTER, Config, Problem
from services.api.status import EmailStatus, KnownEvent, email_status
from services.api.status_store import StatusStore, StatusStoreUnavailable
from shared.events import UnreadableEvent, parse_event
from shared.schema import MessageId

log = logging.getLogger("api.status")

MESSAGE_ID = TypeAdapter[str](MessageId)


async def get_status_store(request: Request) -> StatusStore:
    store: StatusStore = request.app.state.status_store
    return store


ReadModel = Annotated[StatusStore, Depends(get_status_store)]

router = APIRouter()


@router.get(
    "/emails/{message_id}",
    response_model=EmailStatus,
    responses={
        404: {"model": Problem, "description": "No email has this id"},
        422: {"model": Problem, "description": "This is not a message id"},
        503: {
            "model": Problem,
            "description": "The read model cannot be reached; retry later",
            "headers": RETRY_AFTER,
        },
    },
)
async def get_email(message_id: str, store: ReadModel, settings: Config) -> Response:
    """What happened to an email after its 202: its status, each recipient's state and last
    reply, and the history of its events with their partitions and offsets. Eventually
    consistent: it trails the events topic by the status consumer group's lag."""
    try:
        MESSAGE_ID.validate_python(message_id)
    except ValidationError:
        return problem(
            422,
            "expected a message id as POST /emails answers it: 1 to 200 letters, digits, "
            f"'.', '_' or '-', got {message_id[:200]!r}",
            field="id",
        )
    try:
        rows = await store.events_of(message_id)
    except StatusStoreUnavailable as error:
        return problem(
            503,
            f"cannot read the email's status: {error}. Retry later",
            headers={"Retry-After": str(settings.api_retry_after_seconds)},
        )
    known = []
    for row in rows:
        try:
            known.append(KnownEvent(parse_event(row.body.encode()), row.position))
        except UnreadableEvent as error:  # kept by another version of the API
            log.warning(
                "skipped the unreadable event %s of %s: %s", row.event_id, message_id, error
            )
    answer = email_status(known, datetime.now(UTC))
    if answer is None:
        return problem(
            404,
            f"no email has the id {message_id}: the API never accepted it, or its events are "
            "older than the events topic keeps",
        )
    return Response(answer.model_dump_json(by_alias=True), media_type="application/json")
