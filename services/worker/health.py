"""The worker's small HTTP port: `/healthz` (alive), `/readyz` (a member of the group, the SMTP
server accepts its settings, the dedupe store answers) and `/metrics` (Prometheus)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from aiokafka.structs import TopicPartition
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.membership import GroupMembership
from services.worker.metrics import metrics_registry
from services.worker.offsets import PartitionOffsets
from services.worker.processor import AttemptCounts
from services.worker.store_outage import StoreOutage
from shared.metrics_endpoint import PrometheusAnswer


class OwnedPartitions(Protocol):
    """What the health app reads of the partitions the worker owns (assignment.Assignment)."""

    @property
    def partitions(self) -> Mapping[TopicPartition, object]: ...

    @property
    def retry_partitions(self) -> Mapping[TopicPartition, object]: ...

    def partition_offsets(self) -> list[PartitionOffsets]: ...


def create_health_app(
    membership: GroupMembership,
    owned: OwnedPartitions,
    group: str,
    configuration_faults: ConfigurationFaults,
    attempt_counts: AttemptCounts,
    store_outage: StoreOutage,
) -> FastAPI:
    app = FastAPI(title="Email worker", openapi_url=None)
    registry = metrics_registry(owned.partition_offsets, attempt_counts, configuration_faults)
    app.state.metrics_registry = registry  # the composition root adds the event loop's lag

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if not membership.joined:
            return JSONResponse({"status": f"not yet a member of {group}"}, status_code=503)
        fault = configuration_faults.current
        if fault is not None:
            return JSONResponse(
                {
                    "status": f"not ready: {fault.reason}",
                    "configuration_fault": fault.kind,
                    "for_seconds": round(configuration_faults.seconds, 1),
                },
                status_code=503,
            )
        if store_outage.reason is not None:
            # The partitions stay: the emails wait for the store, and no other worker could
            # deliver them without it either.
            return JSONResponse(
                {
                    "status": "not ready: the dedupe store does not answer "
                    f"({store_outage.reason})",
                    "for_seconds": round(store_outage.seconds, 1),
                },
                status_code=503,
            )
        partitions = sorted(f"{tp.topic}-{tp.partition}" for tp in owned.partitions)
        retry_partitions = sorted(f"{tp.topic}-{tp.partition}" for tp in owned.retry_partitions)
        return JSONResponse(
            {
                "status": "ready",
                "partitions": partitions,
                "retry_partitions": retry_partitions,
                "rebalances": membership.rebalances,
                "last_rebalance_seconds": membership.last_rebalance_seconds,
            }
        )

    @app.get("/metrics")
    async def metrics() -> PrometheusAnswer:
        return PrometheusAnswer(registry)

    return app
