"""The API's routes: `POST /emails`, `POST /emails/batch`, `GET /healthz`, `GET /readyz` and
`GET /metrics`. An email's status and the suppression list have theirs in status_routes.py and
suppression_routes.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from services.api import batch, metrics
from services.api.accepted_events import AcceptedEvents
from services.api.email_limits import recipients_over_limit
from services.api.email_queue import EmailQueue, EmailTooLarge, KafkaUnavailable, Queued
from services.api.errors import problem
from services.api.idempotency import (
    BATCH_ROUTE,
    HEADER,
    KEY_PATTERN,
    MAX_KEY_LENGTH,
    email_fingerprint,
    fingerprint,
    parse_key,
)
from services.api.idempotent_requests import REPLAYED_HEADER, IdempotentRequests
from shared.metrics_endpoint import PrometheusAnswer
from shared.schema import (
    SCHEMA_VERSION,
    EmailContent,
    EmailRecord,
    message_id_for,
    new_message_id,
)
from shared.settings import Settings

BATCH_PATH = "/emails/batch"


# async: FastAPI runs a plain `def` dependency in a thread pool, a thread hop per request.
async def get_email_queue(request: Request) -> EmailQueue:
    email_queue: EmailQueue = request.app.state.email_queue
    return email_queue


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics_registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return registry


async def get_idempotent_requests(request: Request) -> IdempotentRequests:
    requests: IdempotentRequests = request.app.state.idempotent_requests
    return requests


async def get_accepted_events(request: Request) -> AcceptedEvents:
    accepted_events: AcceptedEvents = request.app.state.accepted_events
    return accepted_events


async def get_idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description="Any unique string per email or batch (a UUID is best), 1 to "
            f"{MAX_KEY_LENGTH} printable ASCII characters, bare or as an RFC 8941 string in "
            "double quotes. A retry with the same key and body gets the first answer again "
            f"({REPLAYED_HEADER}: true) and the same message ids; the same key with another "
            "body is 422, and while the first request is still in flight, 409. Keys are kept "
            "API_IDEMPOTENCY_KEY_HOURS (24 h).",
            # Documented, not checked here: parse_key answers 400 with the reason.
            json_schema_extra={"pattern": KEY_PATTERN},
        ),
    ] = None,
) -> str | None:
    return None if key is None else parse_key(key)


Queue = Annotated[EmailQueue, Depends(get_email_queue)]
Config = Annotated[Settings, Depends(get_settings)]
MetricsRegistry = Annotated[CollectorRegistry, Depends(get_metrics_registry)]
Requests = Annotated[IdempotentRequests, Depends(get_idempotent_requests)]
IdempotencyKey = Annotated[str | None, Depends(get_idempotency_key)]
AcceptedEventsOf = Annotated[AcceptedEvents, Depends(get_accepted_events)]
DryRun = Annotated[
    bool,
    Query(
        description="Check the email and answer 200 without queueing it: everything a send "
        "does short of Kafka. It claims no Idempotency-Key."
    ),
]


class QueuedEmail(BaseModel):
    id: str
    status: Literal["queued"] = "queued"
    topic: str
    partition: int
    offset: int


class Problem(BaseModel):
    detail: str
    errors: list[dict[str, str]] = []


def field_error(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


async def recipients_within_limit(request: Request, settings: Config) -> None:
    """API_MAX_RECIPIENTS, counted in the JSON before any address in it is read.

    FastAPI parses the body before it runs the route's dependencies and validates it after
    them: reading an address costs up to a millisecond, and 20,000 of them took a second only
    to be refused."""
    try:
        body = await request.json()  # Starlette keeps what FastAPI parsed: no second parse
    except ValueError:
        return  # not JSON: the body's own validation says so
    too_many = recipients_over_limit(body, settings.api_max_recipients)
    if too_many is not None:
        raise field_error("to", too_many)


RETRY_AFTER = {
    "Retry-After": {
        "description": "How many seconds to wait before retrying",
        "schema": {"type": "integer"},
    }
}

REPLAYED = {
    REPLAYED_HEADER: {
        "description": "true: the answer kept for an earlier request with the same "
        "Idempotency-Key and body, byte for byte; nothing was queued again",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
LOCATION = {
    "Location": {
        "description": "/emails/{id}: where the email's status is (GET)",
        "schema": {"type": "string"},
    }
}
KEY_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": Problem,
        "description": "The body is not JSON, or the Idempotency-Key is invalid",
    },
    409: {
        "model": Problem,
        "description": "A request with this Idempotency-Key is still in flight: retry after "
        "Retry-After seconds to get its answer",
        "headers": RETRY_AFTER,
    },
}

router = APIRouter()


@router.post(
    "/emails",
    status_code=202,
    response_model=QueuedEmail,
    responses={
        200: {"description": "With dry_run=true: the email is valid, and was not queued"},
        202: {"headers": {**REPLAYED, **LOCATION}},
        **KEY_ANSWERS,
        413: {
            "model": Problem,
            "description": "The body is over API_MAX_BODY_BYTES, or its record is larger "
            "than the Kafka topic takes (max.message.bytes)",
        },
        422: {
            "model": Problem,
            "description": "A field is invalid, or the Idempotency-Key was used with another "
            "body; `errors` names the field",
        },
        503: {
            "model": Problem,
            "description": "Kafka did not acknowledge, or the Idempotency-Key could not be "
            "checked; retry later with the same key",
            "headers": RETRY_AFTER,
        },
    },
    dependencies=[Depends(recipients_within_limit)],
)
async def send_email(
    email: EmailContent,
    queue: Queue,
    settings: Config,
    requests: Requests,
    idempotency_key: IdempotencyKey,
    accepted_events: AcceptedEventsOf,
    dry_run: DryRun = False,
) -> Response:
    """Queue one email: 202 once Kafka has the record, with its partition and offset, and
    `Location: /emails/{id}`, where its status is."""
    body_fingerprint = ""
    message_id = new_message_id()
    if idempotency_key is not None:
        body_fingerprint = email_fingerprint(email)
        message_id = message_id_for(idempotency_key, body_fingerprint)
    record = EmailRecord.model_construct(
        **dict(email),
        schema_version=SCHEMA_VERSION,
        message_id=message_id,
        created_at=datetime.now(UTC),
    )
    if dry_run:
        try:
            queue.kafka_record(record)  # everything a send does, short of Kafka
        except EmailTooLarge as error:
            metrics.refused("too_large")
            raise HTTPException(status_code=413, detail=str(error)) from None
        return JSONResponse({"id": record.message_id, "status": "valid"})

    async def produce() -> Response:
        try:
            queued = await queue.enqueue(record)
        except EmailTooLarge as error:
            metrics.refused("too_large")
            raise HTTPException(status_code=413, detail=str(error)) from None
        except KafkaUnavailable as error:
            metrics.refused("kafka_unavailable")
            raise HTTPException(
                status_code=503,
                detail=f"{error}. The email may or may not be queued: retry with the same "
                "Idempotency-Key, and it will be delivered once either way.",
                headers={"Retry-After": str(settings.api_retry_after_seconds)},
            ) from None
        await accepted_events.write([(record, queued)])
        answer = QueuedEmail(
            id=record.message_id,
            topic=queued.topic,
            partition=queued.partition,
            offset=queued.offset,
        )
        metrics.EMAILS_ACCEPTED.inc()
        # A Response as is: FastAPI would otherwise validate and re-encode the model it just got.
        return Response(answer.model_dump_json(), status_code=202, media_type="application/json")

    response = await requests.answer_once(idempotency_key, body_fingerprint, produce)
    if response.status_code == 202:
        # A replay's too: the same key and body are the same email, with the same id.
        response.headers["Location"] = email_location(message_id)
    return response


def email_location(message_id: str) -> str:
    return f"/emails/{message_id}"


@router.post(
    BATCH_PATH,
    status_code=202,
    response_model=batch.BatchAnswer,
    responses={
        202: {
            "description": "At least one email was queued; `results` has one result per "
            "email, in order: its id and place in Kafka, or its errors",
            "headers": REPLAYED,
        },
        **KEY_ANSWERS,
        413: {
            "model": batch.BatchProblem,
            "description": "The body is over API_MAX_BATCH_BODY_BYTES, or every email in it "
            "is too large",
        },
        422: {
            "model": batch.BatchProblem,
            "description": "Not 1 to 100 emails, no valid email (`results` says why for each), "
            "or the Idempotency-Key was used with another body",
        },
        503: {
            "model": batch.BatchProblem,
            "description": "Kafka did not acknowledge every email (`results` says which), or "
            "the Idempotency-Key could not be checked; retry the batch with the same key",
            "headers": RETRY_AFTER,
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": EmailContent.model_json_schema(by_alias=True),
                        "minItems": 1,
                        "maxItems": batch.MAX_BATCH_EMAILS,
                    }
                }
            },
        }
    },
)
async def send_batch(
    emails: Annotated[list[Any], Body()],
    queue: Queue,
    settings: Config,
    requests: Requests,
    idempotency_key: IdempotencyKey,
    accepted_events: AcceptedEventsOf,
) -> Response:
    """Queue up to 100 emails, each checked on its own and the valid ones produced together:
    202 if at least one was queued, with one result per email in the request's order."""
    size_problem = batch.batch_size_problem(len(emails))
    if size_problem is not None:
        metrics.refused("invalid")
        return problem(422, size_problem, field="body")
    checked = [
        batch.check(item, index, settings.api_max_recipients, settings.api_max_body_bytes)
        for index, item in enumerate(emails)
    ]
    valid = {index: email for index, email in enumerate(checked) if isinstance(email, EmailContent)}
    refused = [result for result in checked if isinstance(result, batch.RefusedItem)]
    for result in refused:
        metrics.refused(result.status)
    if not valid:
        status, body = batch.answer(list(refused))
        return Response(body, status_code=status, media_type="application/json")
    batch_fingerprint = ""
    if idempotency_key is not None:
        batch_fingerprint = fingerprint(BATCH_ROUTE, batch.fingerprinted(emails, checked))
    created_at = datetime.now(UTC)
    records = {
        index: EmailRecord.model_construct(
            **dict(email),
            schema_version=SCHEMA_VERSION,
            message_id=new_message_id()
            if idempotency_key is None
            else message_id_for(idempotency_key, batch_fingerprint, index),
            created_at=created_at,
        )
        for index, email in valid.items()
    }

    async def produce() -> Response:
        outcomes = await asyncio.gather(
            *(queue.enqueue(record) for record in records.values()), return_exceptions=True
        )
        await accepted_events.write(
            [
                (record, outcome)
                for record, outcome in zip(records.values(), outcomes, strict=True)
                if isinstance(outcome, Queued)
            ]
        )
        results, kafka_error = batch.results(refused, records, outcomes)
        for result in results:
            if isinstance(result, batch.QueuedItem):
                metrics.EMAILS_ACCEPTED.inc()
            elif isinstance(result, batch.UnconfirmedItem):
                metrics.refused("kafka_unavailable")
            elif result.index in records:  # too large for the topic, as Kafka found
                metrics.refused("too_large")
        status, body = batch.answer(results, kafka_error)
        headers = {"Retry-After": str(settings.api_retry_after_seconds)} if status == 503 else None
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    return await requests.answer_once(idempotency_key, batch_fingerprint, produce)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Problem}})
async def readyz(queue: Queue) -> dict[str, str]:
    """Kafka answers and the topic exists."""
    reason = await queue.not_ready_reason()
    if reason is not None:
        raise HTTPException(status_code=503, detail=reason)
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def prometheus_metrics(registry: MetricsRegistry) -> Response:
    """The API's metrics for Prometheus: emails accepted and refused, Kafka's acknowledgement
    time, and the process's memory and CPU."""
    # Never gzipped: the loop that would compress is the one answering POST /emails.
    return PrometheusAnswer(registry, gzip=False)
