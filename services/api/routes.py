"""The API's routes: `POST /emails`, `GET /healthz`, `GET /readyz` and `GET /metrics`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from services.api import metrics
from services.api.email_queue import EmailQueue, EmailTooLarge, KafkaUnavailable
from shared.metrics_endpoint import PrometheusAnswer
from shared.schema import SCHEMA_VERSION, EmailContent, EmailRecord, message_id_for
from shared.settings import Settings


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


Queue = Annotated[EmailQueue, Depends(get_email_queue)]
Config = Annotated[Settings, Depends(get_settings)]
MetricsRegistry = Annotated[CollectorRegistry, Depends(get_metrics_registry)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any unique string per email (a UUID is best). A retry with the same key "
        "gets the same message id, and the worker never delivers one message id twice.",
    ),
]
DryRun = Annotated[
    bool,
    Query(
        description="Check the email and answer 200 without queueing it: everything a send "
        "does short of Kafka."
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
    if not isinstance(body, dict):
        return
    count = sum(len(body[name]) for name in ("to", "cc", "bcc") if isinstance(body.get(name), list))
    if count > settings.api_max_recipients:
        raise field_error(
            "to",
            f"at most {settings.api_max_recipients} recipients in to, cc and bcc together, "
            f"got {count}",
        )


router = APIRouter()


@router.post(
    "/emails",
    status_code=202,
    response_model=QueuedEmail,
    responses={
        200: {"description": "With dry_run=true: the email is valid, and was not queued"},
        400: {"model": Problem, "description": "The body is not JSON"},
        413: {
            "model": Problem,
            "description": "The body is over API_MAX_BODY_BYTES, or its record is larger "
            "than the Kafka topic takes (max.message.bytes)",
        },
        422: {"model": Problem, "description": "A field is invalid; `errors` names it"},
        503: {"model": Problem, "description": "Kafka did not acknowledge; retry later"},
    },
    dependencies=[Depends(recipients_within_limit)],
)
async def send_email(
    email: EmailContent,
    queue: Queue,
    settings: Config,
    idempotency_key: IdempotencyKey = None,
    dry_run: DryRun = False,
) -> Response:
    """Queue one email: 202 once Kafka has the record, with its partition and offset."""
    record = EmailRecord.model_construct(
        **dict(email),
        schema_version=SCHEMA_VERSION,
        message_id=message_id_for(idempotency_key),
        created_at=datetime.now(UTC),
    )
    try:
        if dry_run:
            queue.kafka_record(record)  # everything a send does, short of Kafka
            return JSONResponse({"id": record.message_id, "status": "valid"})
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
    answer = QueuedEmail(
        id=record.message_id, topic=queued.topic, partition=queued.partition, offset=queued.offset
    )
    metrics.EMAILS_ACCEPTED.inc()
    # A Response as is: FastAPI would otherwise validate and re-encode the model it just got.
    return Response(answer.model_dump_json(), status_code=202, media_type="application/json")


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
