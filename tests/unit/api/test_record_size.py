"""How large an email's Kafka record is, and whether API_MAX_BODY_BYTES fits the topic's
max.message.bytes and the producer's max_request_size: plain functions, no Kafka."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.api.email_queue import (
    ENVELOPE_MARGIN_BYTES,
    PRODUCER_MAX_REQUEST_BYTES,
    RecordLimit,
    body_limit_problem,
    record_size_bytes,
)
from shared.schema import SCHEMA_VERSION, EmailContent, EmailRecord, message_id_for

HEADERS = [("schema_version", str(SCHEMA_VERSION).encode())]


def record_bytes_for(body: bytes) -> int:
    """The size of the record the API writes for this HTTP body, built as POST /emails does."""
    content = EmailContent.model_validate_json(body)
    record = EmailRecord.model_construct(
        **dict(content),
        schema_version=SCHEMA_VERSION,
        message_id=message_id_for("an idempotency key", "0" * 64, index=99),
        created_at=datetime.now(UTC),
    )
    key, value = record.to_kafka()
    return record_size_bytes(key, value, HEADERS)


def body(**fields: Any) -> bytes:
    minimal = {"from": "a@b.io", "to": ["c@d.io"], "subject": "", "text": ""}
    return json.dumps({**minimal, **fields}, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "http_body",
    [
        pytest.param(body(), id="minimal"),
        pytest.param(body(text="x" * 100_000), id="long_text"),
        pytest.param(body(text="\\u00e9" * 1000).replace(b"\\\\", b"\\"), id="escaped_text"),
        pytest.param(body(text="é" * 1000, html="<p>" * 100), id="utf8_text_and_html"),
        pytest.param(
            json.dumps(json.loads(body(to=["x@y.io"] * 40)), indent=4).encode(), id="indented"
        ),
    ],
)
def test_a_record_is_at_most_the_margin_larger_than_its_body(http_body: bytes) -> None:
    grown = record_bytes_for(http_body) - len(http_body)

    assert grown <= ENVELOPE_MARGIN_BYTES
    assert grown <= 400, "the margin has room for the envelope to grow"


def test_the_producers_limit_is_aiokafkas_default() -> None:
    """shared.kafka.create_producer keeps aiokafka's max_request_size; the API relies on it."""
    default = inspect.signature(AIOKafkaProducer).parameters["max_request_size"].default

    assert default == PRODUCER_MAX_REQUEST_BYTES


def test_a_record_counts_its_framing_key_value_and_headers() -> None:
    assert record_size_bytes(b"", b"", []) == 61 + 36
    assert record_size_bytes(b"k" * 36, b"v" * 1000, HEADERS) == 61 + 36 + 36 + 1000 + 10 + 15


def test_a_body_limit_within_both_limits_is_no_problem() -> None:
    limit = RecordLimit("email.send", topic_max_message_bytes=1_048_588)

    assert body_limit_problem(512 * 1024, limit) is None
    assert body_limit_problem(limit.max_record_bytes - ENVELOPE_MARGIN_BYTES, limit) is None


def test_a_topic_smaller_than_the_body_limit_names_both_settings_and_both_fixes() -> None:
    problem = body_limit_problem(512 * 1024, RecordLimit("email.send", 65_536))

    assert problem == (
        "API_MAX_BODY_BYTES=524288 does not fit in a Kafka record: topic email.send takes "
        "records of at most 65536 bytes (its max.message.bytes), and a record is up to 1024 "
        "bytes larger than its body. Emails larger than the topic takes are answered 413. To "
        "take every body the API accepts, lower API_MAX_BODY_BYTES to 64512 or raise the "
        "topic's max.message.bytes to 525312 (kafka-configs.sh --alter --entity-type topics "
        "--entity-name email.send --add-config max.message.bytes=525312)"
    )


def test_a_body_limit_over_the_producers_limit_can_only_be_lowered() -> None:
    problem = body_limit_problem(2 * 1024 * 1024, RecordLimit("email.send", 10 * 1024 * 1024))

    assert problem is not None
    assert "the API's Kafka producer sends records of at most 1048576 bytes" in problem
    assert problem.endswith("lower API_MAX_BODY_BYTES to 1047552")


def test_an_unread_topic_limit_leaves_the_producers() -> None:
    limit = RecordLimit("email.send", topic_max_message_bytes=None)

    assert limit.max_record_bytes == PRODUCER_MAX_REQUEST_BYTES
    assert str(limit) == (
        "the API's Kafka producer sends records of at most 1048576 bytes (its max_request_size)"
    )
