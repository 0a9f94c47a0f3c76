"""Which local PostgreSQL `python -m deploy.local.postgres` runs: the one DEDUPE_URL names when
it names one on this machine, under the run directory."""

from __future__ import annotations

from pathlib import Path

from deploy.local.postgres import DEFAULT_DATABASE, DEFAULT_PORT, local_postgres
from shared.settings import Settings


def test_a_local_dedupe_url_sets_the_port_and_the_database(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:15432/worker_states"

    server = local_postgres(Settings(run_dir=tmp_path, dedupe_url=url))

    assert (server.port, server.database) == (15432, "worker_states")
    assert server.directory == tmp_path / "postgres"
    assert server.url == url


def test_without_a_local_dedupe_url_the_defaults_serve(tmp_path: Path) -> None:
    for url in (None, "postgresql://worker@db.internal:5432/shared"):
        server = local_postgres(Settings(run_dir=tmp_path, dedupe_url=url))

        assert (server.port, server.database) == (DEFAULT_PORT, DEFAULT_DATABASE)


def test_a_port_given_wins(tmp_path: Path) -> None:
    url = "postgresql://postgres@localhost:15432/dedupe"

    assert local_postgres(Settings(run_dir=tmp_path, dedupe_url=url), port=16000).port == 16000
