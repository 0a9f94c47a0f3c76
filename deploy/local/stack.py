"""The pipeline's services as local background processes: the SMTP sink, the worker(s), the API.

Each is `python -m services.NAME` with a pid file and a log under the run directory, started
only once its ports are free, and counted as up only once its `/readyz` answers 200.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.local.errors import StackError
from deploy.local.processes import BackgroundProcess, ensure_port_free, tail
from deploy.local.settings import LocalSettings
from deploy.local.smtp_link import plan_smtp_link, prepare

READY_TIMEOUT_SECONDS = 30.0
PORT_RELEASE_SECONDS = 3.0
SMTP_LINKED = frozenset({"services.smtp_sink", "services.worker"})


@dataclass(frozen=True)
class Service:
    name: str  # also the name of its pid and log files
    module: str
    ready_url: str
    ports: Mapping[str, tuple[str, int]]  # setting name -> (host, port) it listens on
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceStart:
    service: Service
    pid: int
    already_running: bool
    seconds: float
    notes: tuple[str, ...] = ()  # what was made for it first, such as its TLS certificate


class LocalStack:
    def __init__(self, settings: LocalSettings, env: Mapping[str, str] | None = None) -> None:
        """`env`: the services' environment, where they read their settings (default: ours)."""
        self.settings = settings
        self.env = dict(os.environ if env is None else env)
        self.smtp_link = plan_smtp_link(settings)

    def sink(self) -> Service:
        s = self.settings
        return Service(
            name="smtp_sink",
            module="services.smtp_sink",
            ready_url=f"http://{s.sink_host}:{s.sink_http_port}/readyz",
            ports={
                "SINK_SMTP_PORT": (s.sink_host, s.sink_smtp_port),
                "SINK_HTTP_PORT": (s.sink_host, s.sink_http_port),
            },
            env=self.smtp_link.sink_env,
        )

    def api(self) -> Service:
        s = self.settings
        return Service(
            name="api",
            module="services.api",
            ready_url=f"http://{s.api_host}:{s.api_port}/readyz",
            ports={"API_PORT": (s.api_host, s.api_port)},
        )

    def worker(self, number: int = 1) -> Service:
        """Worker 1 is `worker`; `make add-worker` adds worker-2, worker-3... on the next ports.

        On a cluster (`make up BROKERS=3`) each added worker is as if on a host of its own: a
        run directory of its own (run/hosts/worker-N), sharing only Kafka and PostgreSQL."""
        s = self.settings
        port = s.worker_port + number - 1
        name = "worker" if number == 1 else f"worker-{number}"
        own_host = {"RUN_DIR": str(s.run_dir / "hosts" / name)} if s.kafka_brokers > 1 else {}
        return Service(
            name=name,
            module="services.worker",
            ready_url=f"http://{s.worker_host}:{port}/readyz",
            ports={"WORKER_PORT": (s.worker_host, port)},
            env={"WORKER_PORT": str(port), **own_host, **self.smtp_link.worker_env},
        )

    def console(self) -> Service:
        s = self.settings
        return Service(
            name="console",
            module="services.console",
            ready_url=f"http://{s.console_host}:{s.console_port}/readyz",
            ports={"CONSOLE_PORT": (s.console_host, s.console_port)},
        )

    def services(self) -> list[Service]:
        """In start order: the sink before the worker that delivers to it, then the API, and
        the console that watches them all."""
        return [self.sink(), self.worker(), self.api(), self.console()]

    def running_workers(self) -> list[Service]:
        numbers = sorted(
            1 if path.stem == "worker" else int(path.stem.removeprefix("worker-"))
            for path in (self.settings.run_dir / "pids").glob("worker*.pid")
        )
        return [
            self.worker(number)
            for number in numbers
            if self.process(self.worker(number)).running_pid()
        ]

    def process(self, service: Service) -> BackgroundProcess:
        return BackgroundProcess(service.name, self.settings.run_dir, marker=f"-m {service.module}")

    def log_file(self, service: Service) -> Path:
        return self.process(service).log_file

    def start(self, service: Service) -> ServiceStart:
        started = time.monotonic()
        process = self.process(service)
        running_pid = process.running_pid()
        if running_pid is not None:
            return ServiceStart(service, running_pid, already_running=True, seconds=0.0)
        for setting, (host, port) in service.ports.items():
            self._wait_for_port(host, port, setting)
        # The sink's certificate and auth file, and the CA the worker trusts: made by whichever
        # of the two starts first, checked by the other.
        notes = prepare(self.smtp_link) if service.module in SMTP_LINKED else []
        pid = process.start(
            [sys.executable, "-m", service.module],
            env={**self.env, "PYTHONUNBUFFERED": "1", **service.env},
        )
        self._wait_until_ready(service, process)
        seconds = time.monotonic() - started
        return ServiceStart(
            service, pid, already_running=False, seconds=seconds, notes=tuple(notes)
        )

    def _wait_for_port(self, host: str, port: int, setting: str) -> None:
        """A process that was just stopped or killed may hold its port a moment longer."""
        deadline = time.monotonic() + PORT_RELEASE_SECONDS
        while True:
            try:
                ensure_port_free(host, port, setting, str(port + 1 if port < 65535 else port - 1))
                return
            except StackError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, service: Service) -> bool:
        # The worker's own bound: its shutdown timeout, the reply to a final "." already sent
        # (RFC 5321 gives it 10 minutes; a local sink answers in milliseconds), then 5 s each to
        # leave the group and to close its producer; SIGKILL only after that.
        settings = self.settings
        return self.process(service).stop(
            settings.worker_shutdown_timeout_seconds + settings.smtp_data_end_timeout_seconds + 15
        )

    def _wait_until_ready(self, service: Service, process: BackgroundProcess) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.running_pid() is None:
                raise StackError(
                    f"{service.name} stopped during start-up. The end of its log:\n"
                    f"{tail(process.log_file)}"
                )
            try:
                if httpx.get(service.ready_url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise StackError(
            f"{service.name} did not become ready ({service.ready_url}) within "
            f"{READY_TIMEOUT_SECONDS:.0f} s; it is left running so you can look. The end of its "
            f"log:\n{tail(process.log_file)}"
        )
