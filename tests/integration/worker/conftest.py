"""Fixtures for the worker against real servers: Mailpit's binary, built once per machine, and
a certificate of the session's own CA. The private PostgreSQL: tests/integration/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mailpit import Certificate, mailpit_binary, make_certificate


@pytest.fixture(scope="session")
def mailpit() -> Path:
    """Mailpit's binary; a fresh machine builds it here once (Go, about 45 s)."""
    return mailpit_binary()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))
