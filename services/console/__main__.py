"""`python -m services.console`: the console's composition root: settings, what it watches,
the Kafka reader (an admin client and a group-less consumer), one HTTP client for the API and
the sink, the snapshot loop and the web server."""

from __future__ import annotations

import asyncio
import logging

import httpx

from services.console.app import create_app
from services.console.kafka_reader import create_kafka_reader
from services.console.loop import SnapshotLoop
from services.console.snapshot import Picture, Watch
from services.console.sources import ApiSource, SinkSource
from shared.event_loop import run
from shared.http_server import embedded_server, listen
from shared.logs import configure_logging
from shared.settings import Settings, load_settings
from shared.signals import stop_on_signals

log = logging.getLogger("console")

KAFKA_REQUEST_TIMEOUT_SECONDS = 5.0  # a busy broker is slow, not down
HTTP_TIMEOUT_SECONDS = 1.0
KAFKA_STALE_SECONDS = 5.0  # /readyz: the last good read of Kafka is at most this old


async def serve(settings: Settings) -> None:
    http_socket = listen("console", settings.console_host, settings.console_port)
    watch = Watch.of(settings)
    kafka = create_kafka_reader(
        settings.kafka_bootstrap_servers,
        client_id="email-console",
        request_timeout_ms=int(KAFKA_REQUEST_TIMEOUT_SECONDS * 1000),
        watch=watch,
    )
    api_url = settings.console_api_url or local_url(settings.api_host, settings.api_port)
    sink_url = settings.console_sink_url or local_url(settings.sink_host, settings.sink_http_port)
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECONDS) as http:
        api = ApiSource(http, api_url)
        loop = SnapshotLoop(
            Picture(watch, settings.kafka_bootstrap_servers),
            kafka,
            api.accepted_total,
            SinkSource(http, sink_url).read,
            interval_seconds=settings.console_refresh_seconds,
            kafka_timeout_seconds=KAFKA_REQUEST_TIMEOUT_SECONDS + 1,
            http_timeout_seconds=HTTP_TIMEOUT_SECONDS,
            inbox_url=sink_url,
        )
        server = embedded_server(
            create_app(loop, KAFKA_STALE_SECONDS, api.email),
            settings.console_host,
            settings.console_port,
        )
        stopping = stop_on_signals()
        log.info(
            "console on http://%s:%d/ watching %s as %s, %s as %s and %d retry topics as %s; "
            "the API at %s, the sink at %s",
            settings.console_host, settings.console_port, watch.topic, watch.group,
            watch.events_topic, watch.status_group, len(watch.retry_topics), watch.retry_group,
            api_url, sink_url,
        )  # fmt: skip
        serving = asyncio.create_task(server.serve(sockets=[http_socket]))
        try:
            await loop.run(stopping)
        finally:
            server.should_exit = True
            await serving
            await kafka.close()
            log.info("stopped")


def local_url(host: str, port: int) -> str:
    """Where this machine reaches a service that listens on `host`."""
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    run(serve(settings))


if __name__ == "__main__":
    main()
