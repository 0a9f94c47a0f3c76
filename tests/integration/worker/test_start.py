"""`python -m services.worker` with SMTP settings that cannot work: one line naming the settings
to change, exit status 1, no traceback, no password, before any connection to Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import PROJECT_ROOT
from tests.conftest import ISOLATED, free_port

PASSWORD = "never-printed-at-start"


def start_worker(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **ISOLATED,
        "RUN_DIR": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nobody: it must not get there
        "WORKER_PORT": str(free_port()),
        **settings,
    }
    return subprocess.run(
        [sys.executable, "-m", "services.worker"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        pytest.param(
            {"SMTP_TLS": "none", "SMTP_USERNAME": "ana", "SMTP_PASSWORD": PASSWORD},
            ["SMTP_TLS=starttls", "SMTP_ALLOW_PLAINTEXT_AUTH=true"],
            id="credentials_in_the_clear",
        ),
        pytest.param(
            {"SMTP_TLS": "starttls", "SMTP_USERNAME": "ana", "SMTP_PASSWORD": ""},
            ["SMTP_USERNAME is set but SMTP_PASSWORD is not"],
            id="username_alone",
        ),
        pytest.param(
            {"SMTP_TLS": "tls", "SMTP_CA_FILE": "/nonexistent/ca.pem"},
            ["SMTP_CA_FILE=/nonexistent/ca.pem cannot be loaded"],
            id="ca_file_missing",
        ),
    ],
)
def test_smtp_settings_that_cannot_work_stop_the_worker_with_one_line(
    tmp_path: Path, settings: dict[str, str], named: list[str]
) -> None:
    result = start_worker(tmp_path, **settings)

    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("invalid SMTP settings: ")
    for words in named:
        assert words in line
    assert PASSWORD not in line
