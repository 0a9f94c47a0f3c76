"""The console's HTTP side: the page, `GET /api/snapshot`, the live stream and health probes.

Read-only: nothing here changes the stack. Every page shares the one snapshot loop.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from services.console.loop import SnapshotLoop

STATIC_DIR = Path(__file__).parent / "static"
FIRST_SNAPSHOT_SECONDS = 5.0
# Script, styles and data only from the console itself; email text is never markup anyway.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def create_app(loop: SnapshotLoop, kafka_stale_seconds: float) -> FastAPI:
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
