"""The API's answers to bad input and to Kafka being away: clear, and never a 500 or a 202."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from shared.settings import PROJECT_ROOT, Settings
from tests.conftest import free_port
from tests.e2e.conftest import RunningStack


def email(**fields: Any) -> dict[str, Any]:
    return {
        "from": "demo@example.com",
        "to": ["ana@example.com"],
        "subject": "s",
        "text": "t",
        **fields,
    }


def without(field: str) -> dict[str, Any]:
    fields = email()
    del fields[field]
    return fields


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (email(to=[]), "body", "at least one recipient"),
        (
            email(
                to=[f"r{n}@example.com" for n in range(60)],
                cc=[f"c{n}@example.com" for n in range(41)],
            ),
            "to",
            "at most 100 recipients",  # the stack's API_MAX_RECIPIENTS (tests/e2e/conftest.py)
        ),
        (email(to=["ana"]), "to[0]", "not a valid email address"),
        (email(cc=["ana@example.com\r\nBcc: eve@example.com"]), "cc[0]", "CR, LF"),
        (email(subject="hello\r\nBcc: eve@example.com"), "subject", "CR, LF"),
        (email(subject="x" * 999), "subject", "at most 998 characters"),
        (email(headers={"X-Trace": "1\r\nBcc: eve@example.com"}), "headers.X-Trace", "CR, LF"),
        (email(headers={"X Trace": "1"}), "headers", "printable ASCII"),
        (email(headers={"Bcc": "eve@example.com"}), "headers", "cannot be set in headers"),
        (email(text=None), "body", "a body is needed"),
        (without("from"), "from", "Field required"),
        (without("subject"), "subject", "Field required"),
        (email(priority="high"), "priority", "Extra inputs are not permitted"),
    ],
)
def test_invalid_requests_get_422_naming_the_field(
    stack: RunningStack, body: dict[str, Any], field: str, message: str
) -> None:
    response = stack.post_email(body)

    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and message in e["message"] for e in errors), errors
    assert message in response.json()["detail"]


def test_an_invalid_idempotency_key_gets_400_naming_the_header(stack: RunningStack) -> None:
    response = stack.post_email(email(), idempotency_key="x" * 257)

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert "at most 256" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("body", [b"not json", b'{"from": ', b"\xff\xfe"])
def test_a_body_that_is_not_json_gets_400(stack: RunningStack, body: bytes) -> None:
    response = httpx.post(
        f"{stack.api_url}/emails", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["detail"]


def test_json_that_is_not_an_object_gets_422(stack: RunningStack) -> None:
    response = httpx.post(f"{stack.api_url}/emails", json=["not", "an", "object"])

    assert response.status_code == 422


def test_a_body_over_the_limit_gets_413(stack: RunningStack) -> None:
    response = stack.post_email(email(text="x" * (stack.settings.api_max_body_bytes + 1)))

    assert response.status_code == 413
    assert "API_MAX_BODY_BYTES" in response.json()["detail"]


def test_a_chunked_body_over_the_limit_gets_413(stack: RunningStack) -> None:
    def chunks() -> Any:
        yield b'{"text": "'
        for _ in range(stack.settings.api_max_body_bytes // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = httpx.post(
        f"{stack.api_url}/emails", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413


def test_health_readiness_and_docs(stack: RunningStack) -> None:
    assert httpx.get(f"{stack.api_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{stack.api_url}/readyz").json() == {"status": "ready"}
    assert httpx.get(f"{stack.api_url}/docs").status_code == 200
    assert "/emails" in httpx.get(f"{stack.api_url}/openapi.json").json()["paths"]


def test_kafka_unreachable_gets_503_with_retry_after_in_bounded_time(tmp_path: Any) -> None:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "API_PORT": str(port),
        "API_PRODUCE_TIMEOUT_SECONDS": "2",
        "RUN_DIR": str(tmp_path),
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "services.api"], env=env, cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the API did not start without Kafka"
                time.sleep(0.1)

        started = time.monotonic()
        response = httpx.post(f"{url}/emails", json=email(), timeout=30)
        elapsed = time.monotonic() - started

        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert "may or may not be queued" in response.json()["detail"]
        assert elapsed < 5, "503 within API_PRODUCE_TIMEOUT_SECONDS, never a hang"
        readiness = httpx.get(f"{url}/readyz")
        assert readiness.status_code == 503
        assert "Kafka" in readiness.json()["detail"]
    finally:
        api.terminate()
        api.wait(timeout=10)


def test_a_frozen_broker_gets_503_within_the_produce_timeout(
    stack: RunningStack, kafka: Settings
) -> None:
    broker_pid = int((kafka.run_dir / "pids" / "kafka.pid").read_text())
    os.kill(broker_pid, signal.SIGSTOP)  # the broker stops answering, its sockets stay open
    try:
        started = time.monotonic()
        response = stack.post_email(email())
        elapsed = time.monotonic() - started
    finally:
        os.kill(broker_pid, signal.SIGCONT)

    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(stack.settings.api_retry_after_seconds)
    assert elapsed < stack.settings.api_produce_timeout_seconds + 2
