"""`python -m services.console`: the console's composition root: settings, one Kafka admin
client, one HTTP client for the API and the sink, the snapshot loop and the web server."""

from __future__ import annotations

import asyncio
import logging
import signal

import httpx

from services.console.app import create_app
from services.console.kafka_reader import KafkaReader
from services.console.loop import SnapshotLoop
from services.console.snapshot import Picture
from services.console.sources import ApiSource, SinkSource
from shared.event_loop import run
from shared.http_server import embedded_server, listen
from shared.logs import configure_logging
from shared.settings import Settings, load_settings

log = logging.getLogger("console")

READ_TIMEOUT_SECONDS = 1.0  # a tick never waits longer, so pages update at least once a second
KAFKA_STALE_SECONDS = 5.0  # /readyz: the last good read of Kafka is at most this old


async def serve(settings: Settings) -> None:
    http_socket = listen("console", settings.console_host, settings.console_port)
    kafka = KafkaReader(
        settings.kafka_bootstrap_servers,
        settings.email_topic,
        settings.dlq_topic,
        settings.consumer_group,
        timeout_ms=int(READ_TIMEOUT_SECONDS * 1000),
    )
    async with httpx.AsyncClient(timeout=READ_TIMEOUT_SECONDS) as http:
        loop = SnapshotLoop(
            Picture(settings.email_topic, settings.dlq_topic, settings.consumer_group),
            kafka,
            ApiSource(http, settings.console_api_url),
            SinkSource(http, settings.console_sink_url),
            interval_seconds=settings.console_refresh_seconds,
            read_timeout_seconds=READ_TIMEOUT_SECONDS,
        )
        server = embedded_server(
            create_app(loop, KAFKA_STALE_SECONDS), settings.console_host, settings.console_port
        )
        stopping = asyncio.Event()
        event_loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            event_loop.add_signal_handler(signal_number, stopping.set)
        log.info(
            "console on http://%s:%d/ watching %s as %s",
            settings.console_host, settings.console_port,
            settings.email_topic, settings.consumer_group,
        )  # fmt: skip
        serving = asyncio.create_task(server.serve(sockets=[http_socket]))
        try:
            await loop.run(stopping)
        finally:
            server.should_exit = True
            await serving
            await kafka.close()
            log.info("stopped")


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    run(serve(settings))


if __name__ == "__main__":
    main()
