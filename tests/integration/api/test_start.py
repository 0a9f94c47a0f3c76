"""`python -m services.api` with a store it cannot open (the Idempotency-Keys' and the read
model's): one clear line and exit 1, before it serves anything (no broker needed: it never gets
that far)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shared.settings import PROJECT_ROOT
from tests.conftest import ISOLATED, free_port

PASSWORD = "never-printed-at-start"


def start_api(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **ISOLATED,
        "RUN_DIR": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nobody: it must not get there
        "API_PORT": str(free_port()),
        **settings,
    }
    return subprocess.run(
        [sys.executable, "-m", "services.api"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_api_stops_with_one_line_when_postgresql_is_unreachable(tmp_path: Path) -> None:
    port = free_port()
    result = start_api(
        tmp_path, API_STORE_URL=f"postgresql://api:{PASSWORD}@127.0.0.1:{port}/email"
    )

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "cannot open the API's store (API_STORE_URL, API_DB_PATH): "
        f"cannot reach PostgreSQL at 127.0.0.1:{port}"
    )
    assert "API_STORE_URL" in line
    assert PASSWORD not in line


def test_the_api_stops_with_one_line_when_its_sqlite_file_cannot_be_made(tmp_path: Path) -> None:
    (tmp_path / "api").write_text("a file where the directory should be")

    result = start_api(tmp_path)

    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "cannot open the API's store (API_STORE_URL, API_DB_PATH): cannot open the SQLite"
    )
    assert "API_DB_PATH" in line
