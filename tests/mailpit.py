"""Mailpit as a test's own process: free ports, a temporary database, optional STARTTLS (with a
certificate the test makes) and AUTH; what it received is read through Mailpit's own API."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trustme

from deploy.local.mailpit import fetch_mailpit
from deploy.local.settings import LocalSettings
from tests.conftest import free_port

START_TIMEOUT_SECONDS = 20.0


def mailpit_binary() -> Path:
    """Mailpit, built once into the cache (`make mailpit-fetch`) when this machine has not yet."""
    return fetch_mailpit(LocalSettings().mailpit_cache_dir).binary


@dataclass(frozen=True)
class Certificate:
    """A CA of the test's own, and the certificate it signed for 127.0.0.1 and localhost."""

    ca_file: Path  # what the worker trusts: SMTP_CA_FILE
    cert_file: Path
    key_file: Path


def make_certificate(directory: Path) -> Certificate:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    certificate = Certificate(
        directory / "ca.pem", directory / "server.pem", directory / "server.key"
    )
    ca.cert_pem.write_to_path(str(certificate.ca_file))
    server.cert_chain_pems[0].write_to_path(str(certificate.cert_file))
    server.private_key_pem.write_to_path(str(certificate.key_file))
    return certificate


def starttls_flags(certificate: Certificate) -> list[str]:
    """STARTTLS offered and required before MAIL (and AUTH)."""
    return [
        "--smtp-tls-cert", str(certificate.cert_file),
        "--smtp-tls-key", str(certificate.key_file),
        "--smtp-require-starttls",
    ]  # fmt: skip


def implicit_tls_flags(certificate: Certificate) -> list[str]:
    """TLS from the first byte, as on port 465."""
    return [
        "--smtp-tls-cert", str(certificate.cert_file),
        "--smtp-tls-key", str(certificate.key_file),
        "--smtp-require-tls",
    ]  # fmt: skip


def auth_flags(auth_file: Path, username: str, password: str) -> list[str]:
    """AUTH required, with this one account (Mailpit reads `username:password` lines)."""
    auth_file.write_text(f"{username}:{password}\n")
    return ["--smtp-auth-file", str(auth_file)]


@dataclass
class RunningMailpit:
    process: subprocess.Popen[bytes]
    smtp_port: int
    http_port: int
    log_path: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def total(self) -> int:
        """How many messages Mailpit holds."""
        response = httpx.get(f"{self.api}/api/v1/messages", params={"limit": 1}, timeout=10)
        return int(response.raise_for_status().json()["total"])

    def messages(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.api}/api/v1/messages", params={"limit": 10_000}, timeout=10)
        messages: list[dict[str, Any]] = response.raise_for_status().json()["messages"]
        return messages

    def copies_of(self, message_id: str) -> int:
        """How many messages carry this Message-ID (without its angle brackets), by Mailpit's
        own search."""
        response = httpx.get(
            f"{self.api}/api/v1/search",
            params={"query": f'message-id:"{message_id}"', "limit": 1000},
            timeout=10,
        )
        found = response.raise_for_status().json()["messages"]
        return sum(1 for message in found if message["MessageID"] == message_id)

    def stop(self) -> int:
        """SIGTERM to this Mailpit's own pid; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@contextmanager
def running_mailpit(
    binary: Path,
    directory: Path,
    *flags: str,
    smtp_port: int | None = None,
    http_port: int | None = None,
) -> Iterator[RunningMailpit]:
    """Mailpit on free ports (or the given ones, to restart it where a client expects it), its
    database in `directory`; stopped by its pid on the way out."""
    directory.mkdir(parents=True, exist_ok=True)
    smtp_port, http_port = smtp_port or free_port(), http_port or free_port()
    log_path = directory / f"mailpit-{smtp_port}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                str(binary),
                "--database", str(directory / "mailpit.db"),
                "--smtp", f"127.0.0.1:{smtp_port}",
                "--listen", f"127.0.0.1:{http_port}",
                "--disable-version-check",
                "--smtp-disable-rdns",
                *flags,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    mailpit = RunningMailpit(process, smtp_port, http_port, log_path)
    try:
        _wait_until_ready(mailpit)
        yield mailpit
    finally:
        mailpit.stop()


def _wait_until_ready(mailpit: RunningMailpit) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if mailpit.process.poll() is not None:
            raise AssertionError(
                f"Mailpit exited {mailpit.process.returncode}:\n{mailpit.output()}"
            )
        try:
            ready = httpx.get(f"{mailpit.api}/readyz", timeout=1).status_code == 200
            # Its SMTP server starts beside the HTTP one: ready once both answer.
            with socket.create_connection(("127.0.0.1", mailpit.smtp_port), timeout=1):
                pass
            if ready:
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(
        f"Mailpit was not ready after {START_TIMEOUT_SECONDS} s:\n{mailpit.output()}"
    )
