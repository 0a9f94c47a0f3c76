"""The API's FastAPI application: its routes, a body-size limit, and error answers that name
the field at fault. `create_app` is handed its dependencies; `__main__` builds them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import metrics, status_routes, suppression_routes
from services.api.accepted_events import AcceptedEvents
from services.api.email_queue import EmailQueue
from services.api.errors import field_errors, problem, summary
from services.api.idempotency import HEADER, InvalidKey, KeyPolicy
from services.api.idempotency_store import IdempotencyStore
from services.api.idempotent_requests import IdempotentRequests
from services.api.routes import BATCH_PATH, router
from services.api.status_store import StatusStore
from services.api.suppressions import Suppressions
from shared.settings import Settings
from shared.store import CannotOpenStore

log = logging.getLogger("api")


class StatusConsumer(Protocol):
    """Builds the read model from the events topic while the app runs: status_projector.py."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def create_app(
    settings: Settings,
    email_queue: EmailQueue,
    idempotency_store: IdempotencyStore,
    status_store: StatusStore,
    status_projector: StatusConsumer,
    suppressions: Suppressions,
) -> FastAPI:
    """The app; its lifespan opens the stores and starts the producer and the status
    consumer."""
    metrics_registry = metrics.metrics_registry()
    event_loop_lag = metrics.event_loop_lag(metrics_registry)
    idempotent_requests = IdempotentRequests(
        idempotency_store,
        KeyPolicy(
            keep_seconds=settings.api_idempotency_key_hours * 3600,
            in_flight_seconds=2 * settings.api_produce_timeout_seconds,
        ),
        retry_after_seconds=settings.api_retry_after_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with event_loop_lag.sampling():
            try:
                await idempotency_store.open()
                await status_store.open()
            except CannotOpenStore as error:
                log.error("cannot open the API's store: %s", error)
                raise
            stopping = asyncio.Event()
            pruning = asyncio.create_task(idempotent_requests.prune_until_stopped(stopping))
            await email_queue.start()
            await status_projector.start()
            yield
            await status_projector.stop()
            await email_queue.stop()
            stopping.set()
            await pruning
            await suppressions.close()
            await status_store.close()
            await idempotency_store.close()

    app = FastAPI(
        title="Email API",
        summary=f"Accepts emails and produces them to the Kafka topic {settings.email_topic}; "
        "a worker delivers them over SMTP. GET /emails/{id} says what happened to one since, "
        f"from the events topic {settings.events_topic}.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.email_queue = email_queue
    app.state.idempotent_requests = idempotent_requests
    app.state.status_store = status_store
    app.state.accepted_events = AcceptedEvents(status_store, email_queue)
    app.state.suppressions = suppressions
    app.state.metrics_registry = metrics_registry
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.api_max_body_bytes,
        max_batch_bytes=settings.api_max_batch_body_bytes,
    )
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(InvalidKey, invalid_key)  # type: ignore[arg-type]
    app.include_router(router)
    app.include_router(status_routes.router)
    app.include_router(suppression_routes.router)
    return app


async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    if request.method == "POST":  # an email refused, not a question asked wrong
        metrics.refused("invalid")
    problems = list(error.errors())
    if any(found["type"] == "json_invalid" for found in problems):
        reason = problems[0].get("ctx", {}).get("error", "")
        return JSONResponse(
            status_code=400,
            content={
                "detail": f"the body is not valid JSON ({reason}): send a JSON object (an "
                "array of them to /emails/batch)"
            },
        )
    errors = field_errors(problems)
    return JSONResponse(status_code=422, content={"detail": summary(errors), "errors": errors})


async def invalid_key(_: Request, error: InvalidKey) -> JSONResponse:
    metrics.refused("invalid")
    return problem(400, str(error), field=HEADER)


class BodySizeLimit:
    """413 for bodies over max_bytes (max_batch_bytes for a batch), counted as they arrive
    (Content-Length may be absent)."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_batch_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_batch_bytes = max_batch_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_batch = scope["path"] == BATCH_PATH
        max_bytes = self.max_batch_bytes if is_batch else self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > max_bytes:
            metrics.refused("too_large")
            response = JSONResponse(
                status_code=413, content={"detail": too_large(is_batch, max_bytes)}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > max_bytes:
                metrics.refused("too_large")
                # FastAPI passes an HTTPException raised while it reads the body straight on.
                raise HTTPException(status_code=413, detail=too_large(is_batch, max_bytes))
            return message

        await self.app(scope, receive_within_limit, send)


def too_large(is_batch: bool, max_bytes: int) -> str:
    if is_batch:
        return (
            f"the body is larger than {max_bytes} bytes (API_MAX_BATCH_BODY_BYTES): send "
            "fewer emails in each batch"
        )
    return f"the body is larger than {max_bytes} bytes (API_MAX_BODY_BYTES): send a smaller email"
