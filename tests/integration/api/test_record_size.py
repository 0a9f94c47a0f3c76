"""An email whose record the topic cannot take gets 413, never 503, on a real broker; a body
limit the topic cannot take is one ERROR line and a not-ready API until the topic is fixed."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError, OutOfOrderSequenceNumber

from services.api.email_queue import PRODUCER_MAX_REQUEST_BYTES, record_size_bytes
from shared.kafka import admin_client, topic_configs
from shared.schema import SCHEMA_VERSION, EmailRecord
from shared.settings import Settings
from tests.integration.api.conftest import NewTopicFactory, running_api

KIB = 1024
HEADERS = [("schema_version", str(SCHEMA_VERSION).encode())]


def email(**fields: Any) -> dict[str, Any]:
    return {"from": "demo@example.com", "to": ["ana@example.com"], "subject": "s", **fields}


def email_of_record_size(record_bytes: int) -> dict[str, Any]:
    """An email whose record, as the API writes it, is `record_bytes` long by the API's count."""
    fields = email(text="")
    record = EmailRecord.model_validate(
        {**fields, "message_id": str(uuid.uuid4()), "created_at": datetime.now(UTC)}
    )
    key, value = record.to_kafka()
    return email(text="x" * (record_bytes - record_size_bytes(key, value, HEADERS)))


async def set_max_message_bytes(settings: Settings, topic: str, max_message_bytes: int) -> None:
    """kafka-configs.sh --alter --add-config max.message.bytes=..., and wait until it applies."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": ""})
    resource.configs = {"max.message.bytes": str(max_message_bytes)}
    async with admin_client(settings.kafka_bootstrap_servers) as admin:
        await admin.alter_configs([resource])
    for _ in range(100):
        configs = await topic_configs(settings.kafka_bootstrap_servers, topic)
        if configs["max.message.bytes"] == str(max_message_bytes):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"max.message.bytes of {topic} did not change")


async def test_an_email_larger_than_the_topic_takes_gets_413_and_readyz_says_why(
    kafka: Settings, new_topic: NewTopicFactory, caplog: pytest.LogCaptureFixture
) -> None:
    topic = await new_topic(**{"max.message.bytes": str(64 * KIB)})
    settings = kafka.model_copy(update={"email_topic": topic})  # API_MAX_BODY_BYTES: 512 KiB

    with caplog.at_level(logging.INFO, logger="api.kafka"):
        async with running_api(settings) as api:
            too_large = await api.post("/emails", json=email(text="x" * 100_000))
            small = await api.post("/emails", json=email(text="hello"))
            not_ready = await api.get("/readyz")
            await set_max_message_bytes(settings, topic, 1024 * KIB)
            ready = await api.get("/readyz")
            the_same_email = await api.post("/emails", json=email(text="x" * 100_000))

    assert too_large.status_code == 413, too_large.text
    assert too_large.json()["detail"].startswith(
        f"the email is too large for the Kafka topic {topic}: its record is "
    )
    assert (
        f"topic {topic} takes records of at most 65536 bytes (its max.message.bytes)"
        in (too_large.json()["detail"])
    )
    assert small.status_code == 202, "smaller emails still go through"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert not_ready.status_code == 503
    assert not_ready.json()["detail"] == errors[0]
    assert "API_MAX_BODY_BYTES=524288 does not fit in a Kafka record" in errors[0]
    assert "lower API_MAX_BODY_BYTES to 64512 or raise the topic's max.message.bytes" in errors[0]
    assert ready.status_code == 200, "raising the topic's limit needs no restart"
    assert the_same_email.status_code == 202


async def test_a_record_the_api_counts_as_just_fitting_is_taken_by_the_broker(
    kafka: Settings, new_topic: NewTopicFactory
) -> None:
    """The API's count of a record's size is never below the broker's."""
    topic = await new_topic(**{"max.message.bytes": str(64 * KIB)})
    # A body limit as large as the topic's, so that the body of a record this size passes it.
    settings = kafka.model_copy(update={"email_topic": topic, "api_max_body_bytes": 64 * KIB})

    async with running_api(settings) as api:
        just_fits = await api.post("/emails", json=email_of_record_size(64 * KIB))
        over = await api.post("/emails", json=email_of_record_size(64 * KIB + 16))

    assert just_fits.status_code == 202, just_fits.text
    assert over.status_code == 413, over.text
    assert "takes records of at most 65536 bytes" in over.json()["detail"]


async def test_a_record_the_api_counts_as_just_fitting_is_taken_by_the_producer(
    kafka: Settings, new_topic: NewTopicFactory
) -> None:
    """With a topic larger than the producer's max_request_size, the producer's limit counts."""
    topic = await new_topic(**{"max.message.bytes": str(4 * 1024 * KIB)})
    settings = kafka.model_copy(update={"email_topic": topic, "api_max_body_bytes": 2 * 1024 * KIB})

    async with running_api(settings) as api:
        not_ready = await api.get("/readyz")
        just_fits = await api.post("/emails", json=email_of_record_size(PRODUCER_MAX_REQUEST_BYTES))
        over = await api.post("/emails", json=email_of_record_size(PRODUCER_MAX_REQUEST_BYTES + 16))

    assert not_ready.status_code == 503
    assert (
        "the API's Kafka producer sends records of at most 1048576 bytes"
        in (not_ready.json()["detail"])
    )
    assert just_fits.status_code == 202, just_fits.text
    assert over.status_code == 413, over.text
    assert "(its max_request_size)" in over.json()["detail"]


async def test_a_topic_limit_lowered_after_start_gets_413_and_the_api_recovers(
    kafka: Settings, new_topic: NewTopicFactory
) -> None:
    """The broker's refusal breaks aiokafka's idempotent producer: the API replaces it."""
    topic = await new_topic()
    settings = kafka.model_copy(update={"email_topic": topic, "api_max_body_bytes": 63 * KIB})

    async with running_api(settings) as api:
        assert (await api.get("/readyz")).status_code == 200
        await set_max_message_bytes(settings, topic, 16 * KIB)
        refused = await api.post("/emails", json=email(text="x" * 40_000))
        after = [await api.post("/emails", json=email(text="hello")) for _ in range(3)]
        while after[-1].status_code == 503:  # while the fresh producer connects
            await asyncio.sleep(0.05)
            after.append(await api.post("/emails", json=email(text="hello")))
        readiness = await api.get("/readyz")

    assert refused.status_code == 413, refused.text
    assert "Kafka refused its" in refused.json()["detail"]
    assert {response.status_code for response in after} <= {202, 503}
    assert after[-1].status_code == 202
    assert readiness.status_code == 503, "the fresh producer read the lowered limit"
    assert "takes records of at most 16384 bytes" in readiness.json()["detail"]


async def test_aiokafkas_idempotent_producer_breaks_after_a_refusal_as_too_large(
    kafka: Settings, new_topic: NewTopicFactory
) -> None:
    """Why the API never sends a record the topic cannot take, and replaces the producer when
    the broker refuses one: pins aiokafka's behaviour (0.14), so a fix there shows here."""
    topic = await new_topic(**{"max.message.bytes": str(16 * KIB)})
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"small")  # the broker knows the producer id now
        with pytest.raises(MessageSizeTooLargeError):
            await producer.send_and_wait(topic, b"x" * 20_000)
        with pytest.raises(OutOfOrderSequenceNumber):
            await asyncio.wait_for(producer.send_and_wait(topic, b"small"), timeout=10)
    finally:
        await producer.stop()


async def test_no_log_line_names_a_recipient_even_at_debug(
    kafka: Settings, new_topic: NewTopicFactory, caplog: pytest.LogCaptureFixture
) -> None:
    topic = await new_topic()
    settings = kafka.model_copy(update={"email_topic": topic})
    bcc = ["hidden-one@example.com", "Hidden Two <hidden-two@example.com>"]

    with caplog.at_level(logging.DEBUG):
        async with running_api(settings) as api:
            queued = await api.post(
                "/emails", json=email(text="t", cc=["bob@example.com"], bcc=bcc)
            )
            invalid = await api.post("/emails", json=email(text="t", bcc=["hidden-three@"]))

    assert queued.status_code == 202, queued.text
    assert invalid.status_code == 422
    lines = [record.getMessage() for record in caplog.records]
    assert any(line.endswith("for 4 recipient(s): 1 to, 1 cc, 2 bcc") for line in lines)
    for address in ["hidden-one", "hidden-two", "Hidden Two", "hidden-three"]:
        assert not any(address in line for line in lines), address
