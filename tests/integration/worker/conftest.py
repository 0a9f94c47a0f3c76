"""Fixtures for the worker against real servers: Mailpit's binary, built once per machine, a
certificate of the session's own CA, and a private PostgreSQL for the shared dedupe store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local.postgres import LocalPostgres
from tests.mailpit import Certificate, mailpit_binary, make_certificate
from tests.postgres import private_postgres


@pytest.fixture(scope="session")
def mailpit() -> Path:
    """Mailpit's binary; a fresh machine builds it here once (Go, about 45 s)."""
    return mailpit_binary()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def postgresql() -> Iterator[LocalPostgres]:
    """PostgreSQL 15 on a free port, in a directory of its own; stopped by its pid at the end."""
    with private_postgres() as server:
        yield server
