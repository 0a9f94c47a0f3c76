"""tests/conftest.py's SIGTERM: a run ended by it (a CI runner's timeout) still tears its session
fixtures down, so the processes they started are stopped, not left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from deploy.local.processes import wait_for_exit
from shared.settings import PROJECT_ROOT

A_RUN_WITH_A_SESSION_PROCESS = """
import subprocess
import time

import pytest


@pytest.fixture(scope="session")
def child():
    process = subprocess.Popen(["sleep", "600"])
    with open("child.pid", "w") as pid_file:
        pid_file.write(str(process.pid))
    try:
        yield
    finally:
        process.terminate()
        process.wait()


def test_runs_until_terminated(child):
    with open("running", "w"):
        pass  # the fixture's teardown is armed
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    return not wait_for_exit(pid, timeout_seconds=0)  # a zombie is gone


def test_sigterm_ends_the_run_as_ctrl_c_does_and_the_session_fixtures_stop(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_terminated.py").write_text(A_RUN_WITH_A_SESSION_PROCESS)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-p", "no:timeout", "-q", str(tmp_path)],
        cwd=tmp_path,
        env={
            **{name: value for name, value in os.environ.items() if not name.startswith("PYTEST")},
            "PYTHONPATH": str(PROJECT_ROOT),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    pid_file = tmp_path / "child.pid"
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "running").exists():
            assert run.poll() is None, run.communicate()[0]
            assert time.monotonic() < deadline, "the test never started"
            time.sleep(0.05)

        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=30)

        assert not alive(int(pid_file.read_text())), output
        assert "KeyboardInterrupt" in output
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        left_running = int(pid_file.read_text() or 0) if pid_file.exists() else 0
        if left_running and alive(left_running):
            os.kill(left_running, signal.SIGKILL)
