"""The console's HTTP side: the page, `GET /api/snapshot`, the live stream, an email's journey
(the API's `GET /emails/{id}` passed through) and health probes.

Read-only: nothing here changes the stack. Every page shares the one snapshot loop.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from services.console.loop import SnapshotLoop
from services.console.sources import SourceError, message_id_problem

STATIC_DIR = Path(__file__).parent / "static"
FIRST_SNAPSHOT_SECONDS = 5.0
# Script, styles and data only from the console itself; email text is never markup anyway.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


EmailLookup = Callable[[str], Awaitable[tuple[int, dict[str, Any]]]]


def create_app(loop: SnapshotLoop, kafka_stale_seconds: float, email_of: EmailLookup) -> FastAPI:
    app = FastAPI(title="Email pipeline console", openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"},
        )

    @app.get("/api/snapshot")
    async def snapshot() -> Any:
        """What the page shows now, as JSON: offsets and members in kafka-consumer-groups.sh's
        terms, brokers, leaders and in-sync replicas in kafka-topics.sh's."""
        latest = await loop.first_snapshot(FIRST_SNAPSHOT_SECONDS)
        if latest is None:
            return JSONResponse({"detail": "no snapshot yet: the console is starting"}, 503)
        return latest

    @app.get("/api/events")
    async def events() -> StreamingResponse:
        """Server-Sent Events: every snapshot as it is taken."""
        return StreamingResponse(
            loop.updates(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/emails/{message_id}")
    async def email(message_id: str) -> JSONResponse:
        """An email's journey: the API's `GET /emails/{id}` (its status, recipients and
        history with each record's and event's partition and offset), answered as the API
        answered it; 502 when the API does not answer."""
        problem = message_id_problem(message_id)
        if problem is not None:
            return JSONResponse({"detail": problem}, 422)
        try:
            status_code, answer = await email_of(message_id)
        except SourceError as error:
            return JSONResponse({"detail": f"the API does not answer: {error}"}, 502)
        return JSONResponse(answer, status_code)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if (
            loop.kafka_live_at is None
            or time.monotonic() - loop.kafka_live_at > kafka_stale_seconds
        ):
            reason = (loop.snapshot or {}).get("kafka", {}).get("error") or "not read yet"
            return JSONResponse({"status": f"not ready: Kafka is not answering ({reason})"}, 503)
        return JSONResponse({"status": "ready", "pages_open": loop.pages_open})

    return app
