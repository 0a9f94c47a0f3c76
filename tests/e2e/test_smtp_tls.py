"""The stack over TLS with the one setting a user flips: SMTP_TLS=starttls, and SMTP_USERNAME and
SMTP_PASSWORD; `deploy.local` makes the local CA, and an email sent through the API reaches the
sink over STARTTLS and AUTH, as it would reach a production relay."""

from __future__ import annotations

import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.conftest import run_stack_command, settings_for, stack_env
from tests.e2e.conftest import RunningStack

USER, PASSWORD = "pipeline", "e2e-s3cret"


@dataclass
class TlsStack:
    stack: RunningStack
    services_up_output: str

    @property
    def run_dir(self) -> Path:
        return Path(self.stack.env["RUN_DIR"])

    def logs(self) -> str:
        return "".join(path.read_text() for path in (self.run_dir / "logs").glob("*.log"))


@pytest.fixture(scope="module")
def tls_stack(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    topic = f"email.send.tls-{uuid.uuid4().hex[:6]}"
    env = stack_env(
        tmp_path_factory.mktemp("tls-stack"),
        KAFKA_BOOTSTRAP_SERVERS=kafka.kafka_bootstrap_servers,
        EMAIL_TOPIC=topic,
        DLQ_TOPIC=f"{topic}.dlq",
        EVENTS_TOPIC=f"{topic}.events",
        CONSUMER_GROUP=f"email-send-group.{topic}",
        SMTP_TLS="starttls",
        SMTP_USERNAME=USER,
        SMTP_PASSWORD=PASSWORD,
    )
    try:
        result = run_stack_command("topics", env)
        assert result.returncode == 0, result.stdout + result.stderr
        started = run_stack_command("services-up", env)
        assert started.returncode == 0, started.stdout + started.stderr
        yield TlsStack(RunningStack(env, settings_for(env)), started.stdout)
    finally:
        run_stack_command("services-down", env)


def test_services_up_makes_the_local_ca_and_says_the_sink_speaks_starttls_and_auth(
    tls_stack: TlsStack,
) -> None:
    output, run_dir = tls_stack.services_up_output, tls_stack.run_dir

    assert "Created a local CA for the sink's certificates" in output
    assert "Issued the sink's certificate for localhost, 127.0.0.1" in output
    assert "The sink speaks STARTTLS, and the worker starts TLS before anything else." in output
    assert f"The sink requires AUTH as {USER}" in output
    assert PASSWORD not in output
    assert stat.S_IMODE((run_dir / "sink" / "auth").stat().st_mode) == 0o600
    assert stat.S_IMODE((run_dir / "tls" / "sink-key.pem").stat().st_mode) == 0o600
    sink_log = (run_dir / "logs" / "smtp_sink.log").read_text()
    assert "STARTTLS offered (required)" in sink_log
    assert "AUTH required (PLAIN, LOGIN; 1 user), after STARTTLS only" in sink_log


def test_an_email_reaches_the_sink_over_starttls_and_auth(tls_stack: TlsStack) -> None:
    queued = tls_stack.stack.send(subject="over TLS")

    tls_stack.stack.wait_until_delivered(queued["id"])

    assert "refused for" not in tls_stack.logs(), "no AUTH was refused"
    assert PASSWORD not in tls_stack.logs()


def test_a_restarted_worker_reuses_the_ca_and_still_delivers(tls_stack: TlsStack) -> None:
    ca_before = (tls_stack.run_dir / "tls" / "ca.pem").read_bytes()

    output = tls_stack.stack.command("restart", "worker")
    queued = tls_stack.stack.send(subject="after a restart")

    tls_stack.stack.wait_until_delivered(queued["id"])
    assert "Created" not in output
    assert "Issued" not in output
    assert (tls_stack.run_dir / "tls" / "ca.pem").read_bytes() == ca_before
