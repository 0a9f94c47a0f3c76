"""`python -m services.api`: the API's composition root: settings, the Kafka producer, the store
of Idempotency-Keys and of the read model, the status consumer, the suppression list, the HTTP
server."""

from __future__ import annotations

import logging
import sys

import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI

from services.api.app import create_app
from services.api.email_queue import EmailQueue
from services.api.idempotency_store import idempotency_store
from services.api.status_projector import StatusProjector
from services.api.status_store import status_store
from services.api.suppressions import Suppressions
from shared import event_loop
from shared.kafka import create_producer, topic_configs
from shared.logs import configure_logging
from shared.settings import Settings, load_settings
from shared.store import CannotOpenStore
from shared.suppressions import open_suppression_list


def status_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A member of STATUS_CONSUMER_GROUP, whose committed offset is how far the read model has
    applied the events."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.status_consumer_group,
        client_id="email-api-status",
        enable_auto_commit=False,  # committed once the read model has applied the batch
        auto_offset_reset="earliest",  # a new group applies every event the topic holds
        # The broker answers a fetch as soon as one event is there: the status trails the
        # topic by milliseconds, not by a batch being gathered.
        fetch_min_bytes=1,
    )


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
    # The read model is kept where the Idempotency-Keys are; the suppression list where the
    # workers keep it, beside the dedupe store.
    api_store = settings.api_store_url or settings.api_db_path
    read_model = status_store(api_store)
    return create_app(
        settings,
        EmailQueue(settings, new_producer, topic_configs),
        idempotency_store(api_store),
        read_model,
        StatusProjector(settings, lambda: status_consumer(settings), read_model, topic_configs),
        Suppressions(settings.dedupe_url or settings.dedupe_db_path, open_suppression_list),
    )


async def check_api_store(settings: Settings) -> None:
    """Open the store once before serving: a store that cannot be opened is one clear line and
    an exit, not the traceback of a failed lifespan."""
    store = idempotency_store(settings.api_store_url or settings.api_db_path)
    try:
        await store.open()
    finally:
        await store.close()
    read_model = status_store(settings.api_store_url or settings.api_db_path)
    try:
        await read_model.open()
    finally:
        await read_model.close()


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        event_loop.run(check_api_store(settings))
    except CannotOpenStore as error:
        sys.exit(f"cannot open the API's store (API_STORE_URL, API_DB_PATH): {error}")
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
