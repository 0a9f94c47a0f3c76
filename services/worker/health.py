"""The worker's small HTTP port: `/healthz` (alive) and `/readyz` (a member of the group)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.worker.worker import EmailWorker


def create_health_app(worker: EmailWorker, group: str) -> FastAPI:
    app = FastAPI(title="Email worker", openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not worker.joined_group:
            return JSONResponse({"status": f"not yet a member of {group}"}, status_code=503)
        partitions = sorted(f"{tp.topic}-{tp.partition}" for tp in worker.partitions)
        return JSONResponse(
            {
                "status": "ready",
                "partitions": partitions,
                "rebalances": worker.rebalances,
                "last_rebalance_seconds": worker.last_rebalance_seconds,
            }
        )

    return app
