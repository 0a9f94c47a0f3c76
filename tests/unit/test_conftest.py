"""tests/conftest.py's SIGTERM: a run ended by it (a CI runner's timeout) still tears its session
fixtures down, so the processes they started are stopped, not left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


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
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    pid_file = tmp_path / "child.pid"
    child_pid = None
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert run.poll() is None, run.communicate()[0]
            assert time.monotonic() < deadline, "the session fixture never started its process"
            time.sleep(0.05)
        child_pid = int(pid_file.read_text())

        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=30)

        assert not alive(child_pid), output
        assert "KeyboardInterrupt" in output
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if child_pid is not None and alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)
