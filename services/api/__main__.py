"""`python -m services.api`: the API's composition root: settings, the Kafka producer, the store
of Idempotency-Keys, the HTTP server."""

from __future__ import annotations

import logging
import sys

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.api.app import create_app
from services.api.email_queue import EmailQueue
from services.api.idempotency_store import idempotency_store
from shared import event_loop
from shared.kafka import create_producer, topic_configs
from shared.logs import configure_logging
from shared.settings import Settings, load_settings
from shared.store import CannotOpenStore


def build_app(settings: Settings) -> FastAPI:
    """The API wired to Kafka: what `main` serves, and what the integration tests drive."""

    def new_producer() -> AIOKafkaProducer:
        return create_producer(
            settings,
            client_id="email-api",
            # A batch Kafka has not taken by then expires instead of being sent much later.
            request_timeout_ms=int(settings.api_produce_timeout_seconds * 1000),
        )

    # aiokafka logs each record it sends at DEBUG: the whole email, Bcc addresses included.
    # shared.logs keeps aiokafka at WARNING; no Bcc reaches a log even if that changes.
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.setLevel(max(aiokafka_log.level, logging.INFO))
    return create_app(
        settings,
        EmailQueue(settings, new_producer, topic_configs),
        idempotency_store(settings.api_store_url or settings.api_db_path),
    )


async def check_idempotency_store(settings: Settings) -> None:
    """Open the store once before serving: a store that cannot be opened is one clear line and
    an exit, not the traceback of a failed lifespan."""
    store = idempotency_store(settings.api_store_url or settings.api_db_path)
    try:
        await store.open()
    finally:
        await store.close()


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        event_loop.run(check_idempotency_store(settings))
    except CannotOpenStore as error:
        sys.exit(f"cannot open the store of Idempotency-Keys: {error}")
    uvicorn.run(
        build_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # keep shared.logs' format
        access_log=False,
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":
    main()
