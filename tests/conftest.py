"""Fixtures every kind of test can ask for: free ports and a private, real Kafka broker.

The broker belongs to the test run (free ports, a temporary run directory): it is never
the developer's `make up` broker, and it is stopped at the end even when tests fail.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.settings import LocalSettings
from shared.settings import PROJECT_ROOT


def pytest_configure(config: pytest.Config) -> None:
    # SIGTERM (a CI runner's timeout, `kill PID`) ends the run as Ctrl+C does, so the session's
    # fixtures still stop the brokers and services they started instead of leaving them running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


# Below the ephemeral range (Linux 32768-60999, macOS 49152-65535): a port the kernel hands
# out to outgoing connections could be taken by one while a service restarts on it.
PORT_RANGE = (15000, 32000)


# Ports this process has handed out: a stack's ports are all picked before any is bound, and
# two picks must not fall on one port.
_handed_out: set[int] = set()
WORKER_PORTS = 6  # `make add-worker` puts worker N on WORKER_PORT + N - 1


def free_port(span: int = 1) -> int:
    """A port nothing listens on now (with the `span - 1` after it), outside the range of
    outgoing connections' ports, and never one this process handed out before."""
    for _ in range(500):
        first = random.randint(PORT_RANGE[0], PORT_RANGE[1] - span)
        ports = range(first, first + span)
        if _handed_out.intersection(ports) or not all(_bindable(port) for port in ports):
            continue
        _handed_out.update(ports)
        return first
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# Settings a developer's .env could point outside a private test stack (a real SMTP server, a
# shared dedupe store): environment variables win over .env, so these pin them.
ISOLATED = {
    "API_HOST": "127.0.0.1",
    "WORKER_HOST": "127.0.0.1",
    "SINK_HOST": "127.0.0.1",
    "CONSOLE_HOST": "127.0.0.1",
    "SMTP_HOST": "127.0.0.1",
    "DEDUPE_DB_PATH": "worker/delivered.sqlite3",
    "DEDUPE_URL": "",  # empty is unset: never a developer's own database from .env
    "API_DB_PATH": "api/store.sqlite3",
    "API_STORE_URL": "",
    "SINK_DB_PATH": "sink/messages.sqlite3",
    "SINK_FAIL_4XX_RECIPIENTS": "",
    "SINK_FAIL_5XX_RECIPIENTS": "",
    "SINK_FAIL_4XX_RATE": "0",
    "SINK_FAIL_5XX_RATE": "0",
    "LOG_LEVEL": "INFO",
}


def stack_env(run_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a private local stack: its own run directory and free ports."""
    sink_smtp_port = str(free_port())
    return {
        **os.environ,
        "RUN_DIR": str(run_dir),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "KAFKA_CONTROLLER_PORT": str(free_port()),
        "API_PORT": str(free_port()),
        "WORKER_PORT": str(free_port(span=WORKER_PORTS)),
        "SINK_SMTP_PORT": sink_smtp_port,
        "SMTP_PORT": sink_smtp_port,
        "SINK_HTTP_PORT": str(free_port()),
        "CONSOLE_PORT": str(free_port()),
        **ISOLATED,
        **overrides,
    }


def settings_for(env: dict[str, str]) -> LocalSettings:
    """The settings a service started with this environment reads, and the local stack's own."""
    fields = {
        name.lower(): value
        for name, value in env.items()
        if name.lower() in LocalSettings.model_fields
    }
    return LocalSettings.model_validate(fields)


def run_stack_command(
    command: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m deploy.local COMMAND`, exactly as the Makefile runs it."""
    return subprocess.run(
        [sys.executable, "-m", "deploy.local", command],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_harness(module: str, *arguments: str, timeout: float) -> tuple[int, str]:
    """`python -m MODULE ARGUMENTS` (the chaos runner, the benchmark): its exit code and output.
    On timeout, or when this run is ended, it gets SIGTERM, on which it stops every stack it
    started."""
    harness = subprocess.Popen(
        [sys.executable, "-m", module, *arguments],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = harness.communicate(timeout=timeout)
    except BaseException as ended:  # the timeout, or this run's own SIGTERM or Ctrl+C
        harness.terminate()
        output, _ = harness.communicate(timeout=120)
        if not isinstance(ended, subprocess.TimeoutExpired):
            raise
    print(output)
    return harness.returncode, output


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSettings]:
    """A real single-node Kafka broker with the pipeline's topics provisioned."""
    env = stack_env(tmp_path_factory.mktemp("kafka"))
    try:
        started = run_stack_command("kafka-up", env)
        assert started.returncode == 0, started.stdout + started.stderr
        provisioned = run_stack_command("topics", env)
        assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
        yield LocalSettings(
            run_dir=Path(env["RUN_DIR"]),
            kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
            kafka_controller_port=int(env["KAFKA_CONTROLLER_PORT"]),
        )
    finally:
        run_stack_command("kafka-down", env)
