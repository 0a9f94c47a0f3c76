"""`GET /metrics` for every service: prometheus-client's own ASGI app for one registry.

It answers in the format the scraper asks for (Prometheus' text format, or OpenMetrics), and
gzipped when the scraper accepts it unless the service turns that off. A route returns it as
its response rather than mounting the app: a mount answers /metrics with a redirect to
/metrics/ (prometheus/client_python#1016), and in FastAPI it would drop the route's GET-only
methods and its entry in /openapi.json.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class PrometheusAnswer(Response):
    """The answer to one `GET /metrics`: return it from the route."""

    def __init__(self, registry: CollectorRegistry, *, gzip: bool = True) -> None:
        super().__init__()
        self._metrics_app = make_asgi_app(registry, disable_compression=not gzip)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._metrics_app(scope, receive, send)
