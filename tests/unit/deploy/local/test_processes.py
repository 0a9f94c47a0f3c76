"""Background processes: a pid file that is trusted only while it names our own process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from deploy.local.processes import BackgroundProcess

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)", "test-sleeper"]


def test_start_records_the_pid_and_stop_ends_it(tmp_path: Path) -> None:
    process = BackgroundProcess("sleeper", tmp_path, marker="test-sleeper")

    pid = process.start(SLEEPER)

    assert process.running_pid() == pid
    assert process.pid_file.read_text().strip() == str(pid)
    assert process.stop(grace_seconds=5) is True
    assert process.running_pid() is None
    assert not process.pid_file.exists()


def test_stop_when_not_running_says_so(tmp_path: Path) -> None:
    assert BackgroundProcess("sleeper", tmp_path, marker="test-sleeper").stop(5) is False


def test_a_pid_file_naming_another_program_is_not_trusted(tmp_path: Path) -> None:
    process = BackgroundProcess("sleeper", tmp_path, marker="test-sleeper")
    process.pid_file.parent.mkdir(parents=True)
    process.pid_file.write_text("1\n")  # pid 1 is alive, but it is not our sleeper

    assert process.running_pid() is None
    assert not process.pid_file.exists()


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('ignoring SIGTERM', flush=True); time.sleep(60)",
        "test-stubborn",
    ]
    process = BackgroundProcess("stubborn", tmp_path, marker="test-stubborn")
    process.start(stubborn)
    wait_for_log(process, "ignoring SIGTERM")

    assert process.stop(grace_seconds=0.5) is True
    assert process.running_pid() is None


def test_output_goes_to_the_log_file(tmp_path: Path) -> None:
    process = BackgroundProcess("echo", tmp_path, marker="test-echo")
    process.start([sys.executable, "-c", "print('hello from the background')", "test-echo"])

    wait_for_log(process, "hello from the background")


def wait_for_log(process: BackgroundProcess, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in process.log_file.read_text():
        assert time.monotonic() < deadline, f"{text!r} never reached {process.log_file}"
        time.sleep(0.02)
