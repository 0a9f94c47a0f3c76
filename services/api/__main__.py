"""`python -m services.api`: the API's composition root: settings, Kafka producer, HTTP server."""

from __future__ import annotations

import uvicorn
from aiokafka import AIOKafkaProducer

from services.api.app import create_app
from services.api.email_queue import EmailQueue
from shared.kafka import create_producer
from shared.logs import configure_logging
from shared.settings import load_settings


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)

    def new_producer() -> AIOKafkaProducer:
        return create_producer(
            settings,
            client_id="email-api",
            # A batch Kafka has not taken by then expires instead of being sent much later.
            request_timeout_ms=int(settings.api_produce_timeout_seconds * 1000),
        )

    app = create_app(settings, EmailQueue(settings, new_producer))
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # keep shared.logs' format
        access_log=False,
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":
    main()
