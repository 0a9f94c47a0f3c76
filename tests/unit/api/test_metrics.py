"""The API's /metrics: each answer moves the counter it should, in the Prometheus text format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.api.email_queue import EmailQueue, KafkaUnavailable
from shared.settings import Settings
from tests.unit.api.fakes import app_with_fakes
from tests.unit.api.key_store import MemoryKeyStore
from tests.unit.api.test_app import FakeEmailQueue, default_topic_configs, email, queued_record
from tests.unit.shared.test_loop_lag import block_the_loop

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples_of(text: str) -> Samples:
    """Every sample of a /metrics body by (name, labels), as Prometheus would read it."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def accepted(samples: Samples) -> float:
    return samples[("email_api_emails_accepted_total", ())]


def refused(samples: Samples, reason: str) -> float:
    return samples[("email_api_emails_refused_total", (("reason", reason),))]


def produced(samples: Samples) -> float:
    return samples[("email_api_produce_duration_seconds_count", ())]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(_env_file=None, api_max_body_bytes=4096)
    app = app_with_fakes(settings, FakeEmailQueue(), MemoryKeyStore())  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        yield client


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return samples_of(response.text)


async def test_metrics_are_prometheus_text_with_every_reason_from_the_start(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/metrics")
    samples = samples_of(response.text)

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    for reason in ("invalid", "too_large", "kafka_unavailable"):
        assert refused(samples, reason) >= 0
    assert ("process_resident_memory_bytes", ()) in samples


async def test_openmetrics_when_the_scraper_asks_and_never_compressed(
    client: httpx.AsyncClient,
) -> None:
    openmetrics = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    gzip_accepted = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})

    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    assert gzip_accepted.status_code == 200
    assert "content-encoding" not in gzip_accepted.headers


async def test_metrics_is_a_documented_get_only_route(client: httpx.AsyncClient) -> None:
    app = app_with_fakes(Settings(_env_file=None), FakeEmailQueue(), MemoryKeyStore())  # type: ignore[arg-type]

    head = await client.head("/metrics")
    post = await client.post("/metrics")

    assert list(app.openapi()["paths"]["/metrics"]) == ["get"]
    assert [head.status_code, post.status_code] == [405, 405]
    assert post.json() == {"detail": "Method Not Allowed"}


async def test_a_202_counts_as_accepted_and_nothing_else(client: httpx.AsyncClient) -> None:
    before = await scrape(client)

    queued = await client.post("/emails", json=email())
    dry_run = await client.post("/emails", params={"dry_run": "true"}, json=email())
    after = await scrape(client)

    assert [queued.status_code, dry_run.status_code] == [202, 200]
    assert accepted(after) == accepted(before) + 1, "a dry run is not an accepted email"
    for reason in ("invalid", "too_large", "kafka_unavailable"):
        assert refused(after, reason) == refused(before, reason)


async def test_400_and_422_count_as_refused_invalid(client: httpx.AsyncClient) -> None:
    before = await scrape(client)

    not_json = await client.post(
        "/emails", content=b"{", headers={"Content-Type": "application/json"}
    )
    no_recipient = await client.post("/emails", json=email(to=[]))
    too_many = await client.post("/emails", json=email(to=[f"r{n}@example.com" for n in range(51)]))
    after = await scrape(client)

    assert [not_json.status_code, no_recipient.status_code, too_many.status_code] == [400, 422, 422]
    assert refused(after, "invalid") == refused(before, "invalid") + 3
    assert accepted(after) == accepted(before)


async def test_413_declared_or_streamed_counts_as_refused_too_large(
    client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    before = await scrape(client)
    declared = await client.post("/emails", json=email(text="x" * 5000))
    streamed = await client.post(
        "/emails", content=chunks(), headers={"Content-Type": "application/json"}
    )
    after = await scrape(client)

    assert [declared.status_code, streamed.status_code] == [413, 413]
    assert refused(after, "too_large") == refused(before, "too_large") + 2
    assert refused(after, "invalid") == refused(before, "invalid")


async def test_503_counts_as_refused_kafka_unavailable() -> None:
    queue = FakeEmailQueue(unavailable=True)
    app = app_with_fakes(Settings(_env_file=None), queue, MemoryKeyStore())  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        before = await scrape(client)
        response = await client.post("/emails", json=email())
        after = await scrape(client)

    assert response.status_code == 503
    assert refused(after, "kafka_unavailable") == refused(before, "kafka_unavailable") + 1
    assert accepted(after) == accepted(before)


class SlowProducer:
    """Acknowledges each record after 20 ms, or never."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_and_wait(self, topic: str, *args: object, **kwargs: object) -> object:
        await asyncio.sleep(0.02 if self.answers else 3600)
        return type("RecordMetadata", (), {"topic": topic, "partition": 0, "offset": 7})


@pytest.mark.parametrize("answers", [True, False], ids=["acknowledged", "timed_out"])
async def test_every_produce_is_timed_until_kafka_answers_or_the_timeout(answers: bool) -> None:
    settings = Settings(_env_file=None, api_produce_timeout_seconds=0.1)
    queue = EmailQueue(settings, lambda: SlowProducer(answers), default_topic_configs)
    app = app_with_fakes(settings, queue, MemoryKeyStore())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:
        await queue.start()
        await asyncio.sleep(0.01)
        before = await scrape(client)
        try:
            await queue.enqueue(queued_record())
        except KafkaUnavailable:
            assert not answers
        after = await scrape(client)
        await queue.stop()

    name = "email_api_produce_duration_seconds"
    took = after[(f"{name}_sum", ())] - before[(f"{name}_sum", ())]
    assert produced(after) == produced(before) + 1
    assert (0.02 if answers else 0.1) <= took < 0.5, "from the send to the answer or the timeout"


def test_two_apps_can_be_built_in_one_process() -> None:
    """prometheus_client refuses to register a metric twice in one registry."""
    first = app_with_fakes(Settings(_env_file=None), FakeEmailQueue(), MemoryKeyStore())  # type: ignore[arg-type]
    second = app_with_fakes(Settings(_env_file=None), FakeEmailQueue(), MemoryKeyStore())  # type: ignore[arg-type]

    assert first.state.metrics_registry is not second.state.metrics_registry


async def test_the_event_loop_lag_is_sampled_while_the_app_runs() -> None:
    app = app_with_fakes(Settings(_env_file=None), FakeEmailQueue(), MemoryKeyStore())  # type: ignore[arg-type]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client,
    ):
        await asyncio.sleep(0.25)
        block_the_loop(0.2)
        await asyncio.sleep(0.15)
        samples = await scrape(client)

    assert samples[("email_api_event_loop_lag_seconds_count", ())] >= 2
    assert 0.1 <= samples[("email_api_event_loop_lag_max_seconds", ())] < 0.4
    assert samples[("email_api_event_loop_lag_seconds_bucket", (("le", "0.01"),))] >= 1
