"""The whole pipeline as processes: sink, worker and API started by `deploy.local`, as `make up`
starts them, on the session's private broker with topics of their own and free ports."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.local.demo import idempotency_key_on_partition
from shared.settings import Settings
from tests.conftest import run_stack_command, settings_for, stack_env

DELIVERY_TIMEOUT_SECONDS = 20.0
BOUNCING_RECIPIENT = "bounce@example.com"  # the sink answers 550 to it
GREYLISTED_RECIPIENT = "greylisted@example.com"  # the sink answers 451 to it, until restarted


@dataclass
class RunningStack:
    env: dict[str, str]
    settings: Settings

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    @property
    def sink_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.sink_http_port}"

    def command(self, *arguments: str, timeout: float = 120, **env: str) -> str:
        """`python -m deploy.local ...` against this stack; its output, or the test fails."""
        result = subprocess.run(
            [sys.executable, "-m", "deploy.local", *arguments],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def post_email(
        self, email: Mapping[str, Any], idempotency_key: str | None = None
    ) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return httpx.post(f"{self.api_url}/emails", json=email, headers=headers, timeout=15)

    def send(
        self,
        to: str = "ana@example.com",
        idempotency_key: str | None = None,
        partition: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Send one email through the API and return its 202 answer; given a partition, with
        an Idempotency-Key that puts it there."""
        email = {
            "from": "demo@example.com",
            "to": [to],
            "subject": f"test {uuid.uuid4().hex[:8]}",
            "text": "hello",
            **fields,
        }
        if partition is not None:
            idempotency_key = idempotency_key_on_partition(
                email, f"e2e-{uuid.uuid4().hex[:8]}", partition, self.settings.topic_partitions
            )
        response = self.post_email(email, idempotency_key)
        assert response.status_code == 202, response.text
        queued: dict[str, Any] = response.json()
        return queued

    def message_id_header(self, message_id: str) -> str:
        return f"{message_id}@{self.settings.message_id_domain}"

    def sink_messages(self) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{self.sink_url}/api/v1/messages", params={"limit": 10_000}, timeout=10
        )
        response.raise_for_status()
        messages: list[dict[str, Any]] = response.json()["messages"]
        return messages

    def deliveries_of(self, message_id: str) -> int:
        """How many times the sink received the email with this message id."""
        header = self.message_id_header(message_id)
        return sum(1 for message in self.sink_messages() if message["MessageID"] == header)

    def wait_until_delivered(self, *message_ids: str) -> None:
        wait_until(
            lambda: all(self.deliveries_of(m) >= 1 for m in message_ids),
            DELIVERY_TIMEOUT_SECONDS,
            f"{message_ids} did not reach the sink",
        )

    def worker_log(self) -> str:
        return Path(self.env["RUN_DIR"], "logs", "worker.log").read_text()


def wait_until(condition: Callable[[], bool], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


@pytest.fixture(scope="session")
def stack(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    topic = f"email.send.e2e-{uuid.uuid4().hex[:6]}"
    env = stack_env(
        tmp_path_factory.mktemp("stack"),
        KAFKA_BOOTSTRAP_SERVERS=kafka.kafka_bootstrap_servers,
        EMAIL_TOPIC=topic,
        DLQ_TOPIC=f"{topic}.dlq",
        EVENTS_TOPIC=f"{topic}.events",
        # A group of its own: members of one group subscribed to different topics would make
        # every test that uses email-send-group wait for their rebalances.
        CONSUMER_GROUP=f"email-send-group.{topic}",
        RETRY_CONSUMER_GROUP=f"email-retry-group.{topic}",
        STATUS_CONSUMER_GROUP=f"email-status-group.{topic}",
        WORKER_RETRY_SCHEDULE="2s,4s",
        SINK_FAIL_5XX_RECIPIENTS=BOUNCING_RECIPIENT,
        SINK_FAIL_4XX_RECIPIENTS=GREYLISTED_RECIPIENT,
        WORKER_RETRY_INITIAL_SECONDS="0.2",
        WORKER_RETRY_MAX_SECONDS="1",
        # The schema's own bound: test_hostile_sizes sends the largest email it allows.
        API_MAX_RECIPIENTS="100",
    )
    running = RunningStack(env, settings_for(env))
    try:
        for command in ("topics", "services-up"):
            result = run_stack_command(command, env)
            assert result.returncode == 0, result.stdout + result.stderr
        yield running
    finally:  # also after a failed start: whatever did start is stopped
        run_stack_command("services-down", env)
