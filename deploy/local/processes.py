"""Start a program in the background with a pid file and a log file, and stop it by that pid.

A pid file alone can lie (the process died and the pid was reused), so a pid counts as ours
only while the process's command line still contains the marker we started it with.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.local.errors import StackError


@dataclass(frozen=True)
class BackgroundProcess:
    name: str
    run_dir: Path
    marker: str  # a piece of the command line that only this program has

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.name}.log"

    def running_pid(self) -> int | None:
        """The pid of our running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _is_alive(pid) and self.marker in _command_line_once_set(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                # Its own session: Ctrl-C in the terminal that ran `make up` leaves it running.
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def stop(self, grace_seconds: float) -> bool:
        """SIGTERM, wait up to grace_seconds, then SIGKILL. False if it was not running."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        if not wait_for_exit(pid, grace_seconds):
            os.kill(pid, signal.SIGKILL)
            wait_for_exit(pid, 10)
        self.pid_file.unlink(missing_ok=True)
        return True


def ensure_port_free(host: str, port: int, setting: str, example: str) -> None:
    """Fail with a clear message, naming the setting to change, if another program has port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StackError(
                f"Port {port} on {host} is already in use by another program ({error.strerror}). "
                f"Stop that program, or choose another port with the setting {setting} "
                f"(for example {setting}={example}, in the environment or in .env)."
            ) from None


def wait_for_exit(pid: int, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if not _is_alive(pid):
            return True
        time.sleep(0.05)
    return not _is_alive(pid)


def _is_alive(pid: int) -> bool:
    try:
        # Reap it if it is our own child, or it would linger as a zombie that looks alive.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _process_state(pid) != "Z"


def _command_line_once_set(pid: int) -> str:
    """The command line; it reads empty for an instant while a process starts or exits."""
    for _ in range(10):
        command_line = _command_line(pid)
        if command_line or not _is_alive(pid):
            return command_line
        time.sleep(0.01)
    return ""


def _command_line(pid: int) -> str:
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return ""
    return _ps(pid, "args")


def _process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.exists():
        try:
            # The state follows the command name in parentheses, which may itself hold spaces.
            return stat.read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return ""
    return _ps(pid, "stat")[:1]


def _ps(pid: int, field: str) -> str:
    result = subprocess.run(
        ["ps", "-o", f"{field}=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return result.stdout.strip()


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, to show why a process did not start."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return f"({path} does not exist yet)"
    return f"--- {path}\n" + "\n".join(text)
