"""`python -m services.api`: the API's composition root: settings, Kafka producer, HTTP server."""

from __future__ import annotations

import logging

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.api.app import create_app
from services.api.email_queue import EmailQueue
from shared.kafka import create_producer, topic_configs
from shared.logs import configure_logging
from shared.settings import Settings, load_settings


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
    return create_app(settings, EmailQueue(settings, new_producer, topic_configs))


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
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
