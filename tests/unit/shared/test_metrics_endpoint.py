"""shared.metrics_endpoint: a registry at a route, in the format and encoding the scraper asks."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from shared.metrics_endpoint import PrometheusAnswer


def app_serving(registry: CollectorRegistry, *, gzip: bool) -> Starlette:
    def metrics(_: Request) -> PrometheusAnswer:
        return PrometheusAnswer(registry, gzip=gzip)

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])


def registry_counting(count: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("emails_seen", "Emails seen.", registry=registry).inc(count)
    return registry


async def get(app: Starlette, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        return await client.get("/metrics", headers=headers)


async def test_the_registry_it_is_given_in_prometheus_text_by_default() -> None:
    response = await get(app_serving(registry_counting(3), gzip=True))

    assert response.status_code == 200, "no redirect to /metrics/"
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "emails_seen_total 3.0" in response.text


async def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    response = await get(
        app_serving(registry_counting(1), gzip=True),
        {"Accept": "application/openmetrics-text; version=1.0.0"},
    )

    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_gzip_only_when_accepted_and_allowed() -> None:
    accepted = {"Accept-Encoding": "gzip"}

    allowed = await get(app_serving(registry_counting(1), gzip=True), accepted)
    turned_off = await get(app_serving(registry_counting(1), gzip=False), accepted)
    not_asked = await get(app_serving(registry_counting(1), gzip=True), {"Accept-Encoding": ""})

    assert allowed.headers["content-encoding"] == "gzip"
    assert "emails_seen_total 1.0" in allowed.text
    assert "content-encoding" not in turned_off.headers
    assert "content-encoding" not in not_asked.headers
