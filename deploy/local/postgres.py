"""A local PostgreSQL server as a background process, its data, socket and log in one directory
under the run directory: the dedupe store that workers on several hosts share (DEDUPE_URL).

Debian's postgresql (15 on Debian 12) provides the programs, installed with apt-get when they
are missing; it keeps them in /usr/lib/postgresql/VERSION/bin, off PATH. PostgreSQL refuses
to run as root, so as root every program here runs as the `postgres` user, which owns the
directory. `python -m deploy.local.postgres start|stop|status` drives it by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from deploy.local.errors import StackError
from deploy.local.processes import tail, wait_for_exit
from deploy.local.settings import load_local_settings
from shared.settings import Settings

DEBIAN_VERSIONS_DIR = Path("/usr/lib/postgresql")  # 15/bin/pg_ctl, 17/bin/pg_ctl, ...
DEBIAN_PACKAGE = "postgresql"  # the release's own version: 15 on Debian 12
SERVER_USER = "postgres"  # the cluster's superuser, and the system user that runs it as root
DEFAULT_PORT = 5433  # beside, not on, the 5432 of a PostgreSQL the machine may already run
DEFAULT_DATABASE = "dedupe"
START_TIMEOUT_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
INSTALL_HINT = (
    "Install PostgreSQL 15 or newer (Debian/Ubuntu: sudo apt-get install postgresql-15; macOS: "
    "brew install postgresql@15) or put its bin directory (initdb, pg_ctl, psql) on PATH."
)
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class PostgresStart:
    pid: int
    already_running: bool
    seconds: float


@dataclass(frozen=True)
class LocalPostgres:
    """One server whose files all live in `directory`, listening on host:port only, its
    superuser `postgres` trusted without a password (it listens on the loopback only)."""

    directory: Path
    port: int = DEFAULT_PORT
    database: str = DEFAULT_DATABASE
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> Path:
        return self.directory / "socket"

    @property
    def log_file(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def url(self) -> str:
        """What DEDUPE_URL says to use this server's database."""
        return f"postgresql://{SERVER_USER}@{self.host}:{self.port}/{self.database}"

    def running_pid(self) -> int | None:
        """The postmaster's pid, from its own postmaster.pid, while that process runs."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, PermissionError, ValueError):
            return None
        # A stale file (a crash, a reboot) may name a pid that another program has now.
        if wait_for_exit(pid, timeout_seconds=0) or str(self.data_dir) not in _command_line(pid):
            return None
        return pid

    def start(self, timeout_seconds: float = START_TIMEOUT_SECONDS) -> PostgresStart:
        """Create the cluster once, start it, wait until it answers a query, create the
        database if it is missing. Starting a running server only returns its pid."""
        started = time.monotonic()
        running_pid = self.running_pid()
        if running_pid is not None:
            return PostgresStart(running_pid, already_running=True, seconds=0.0)
        if not DATABASE_NAME.fullmatch(self.database):
            raise StackError(
                f"{self.database!r} is not a database name this stack creates: use lower-case "
                "letters, digits and underscores (for example dedupe)."
            )
        bin_dir = ensure_postgres_bin_dir()
        self._ensure_port_free()
        self._make_directories()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._init_cluster(bin_dir)
        server_options = (
            f"-p {self.port} -k {shlex.quote(str(self.socket_dir))} -c listen_addresses={self.host}"
        )
        pg_ctl_start = [
            str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
            "-o", server_options, "-w", "-t", str(round(timeout_seconds)), "start",
        ]  # fmt: skip
        result = self._run(pg_ctl_start)
        pid = self.running_pid()
        if result.returncode != 0 or pid is None:
            raise StackError(
                f"PostgreSQL did not start on {self.host}:{self.port} ({pg_ctl_start[0]} said: "
                f"{_last_line(result)}). The end of its log:\n{tail(self.log_file)}"
            )
        self._wait_until_it_answers(bin_dir, started + timeout_seconds)
        self._create_database(bin_dir)
        return PostgresStart(pid, already_running=False, seconds=time.monotonic() - started)

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> bool:
        """Stop it by its pid: a fast shutdown (SIGINT: sessions end, the data is flushed), an
        immediate one after `grace_seconds`, SIGKILL last. False if it was not running."""
        pid = self.running_pid()
        if pid is None:
            return False
        for stop_signal in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
            try:
                os.kill(pid, stop_signal)
            except ProcessLookupError:
                return True
            if wait_for_exit(pid, grace_seconds):
                return True
        return True

    def _ensure_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as error:
                raise StackError(
                    f"Port {self.port} on {self.host} is already in use by another program "
                    f"({error.strerror}): stop it, or start PostgreSQL on another port (and put "
                    "that port in DEDUPE_URL)."
                ) from None

    def _make_directories(self) -> None:
        for directory in (self.directory, self.socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        for path in (self.directory, self.socket_dir, *self.directory.glob("*.log")):
            shutil.chown(path, SERVER_USER, SERVER_USER)
        # As root the server runs as postgres, which must be able to reach its directory.
        if self._run(["test", "-w", str(self.directory)]).returncode != 0:
            raise StackError(
                f"The {SERVER_USER} user cannot reach {self.directory}: PostgreSQL refuses to "
                f"run as root, so it runs as {SERVER_USER}, which needs search permission on "
                "every directory above it. Allow it (chmod o+x on each) or use a run directory "
                "under one it can reach (RUN_DIR=/var/tmp/email-pipeline, for example)."
            )

    def _init_cluster(self, bin_dir: Path) -> None:
        initdb = [
            str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SERVER_USER,
            "--auth=trust", "-E", "UTF8", "--no-locale",
        ]  # fmt: skip
        result = self._run(initdb)
        if result.returncode != 0:
            raise StackError(
                f"initdb could not create a cluster in {self.data_dir}:\n"
                f"{result.stdout}{result.stderr}".rstrip()
            )

    def _wait_until_it_answers(self, bin_dir: Path, deadline: float) -> None:
        """pg_ctl -w waits for the postmaster; this waits for a query to be answered."""
        while True:
            result = self._psql(bin_dir, "postgres", "SELECT 1")
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(
                    f"PostgreSQL on {self.host}:{self.port} answered no query in time ("
                    f"{_last_line(result)}), so it was stopped again. The end of its log:\n"
                    + tail(self.log_file)
                )
            time.sleep(0.05)

    def _create_database(self, bin_dir: Path) -> None:
        exists = self._psql(
            bin_dir, "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"
        )
        if exists.returncode == 0 and exists.stdout.strip() == "1":
            return
        created = self._psql(bin_dir, "postgres", f'CREATE DATABASE "{self.database}"')
        if created.returncode != 0:
            raise StackError(
                f"PostgreSQL could not create the database {self.database}: {_last_line(created)}"
            )

    def _psql(self, bin_dir: Path, database: str, query: str) -> subprocess.CompletedProcess[str]:
        psql = [
            str(bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", self.host, "-p", str(self.port), "-U", SERVER_USER, "-d", database,
            "-c", query,
        ]  # fmt: skip
        return self._run(psql)

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """A PostgreSQL program, as the postgres user when we are root, from a directory it
        can read (it warns about one it cannot)."""
        as_server_user = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*as_server_user, *argv],
            cwd=self.directory,
            env={**os.environ, "PGCONNECT_TIMEOUT": "2"},
            capture_output=True,
            text=True,
            check=False,
        )


def find_postgres_bin_dir() -> Path | None:
    """The programs of Debian's newest PostgreSQL, else those of a PostgreSQL on PATH."""
    debian = [
        pg_ctl.parent
        for pg_ctl in DEBIAN_VERSIONS_DIR.glob("*/bin/pg_ctl")
        if pg_ctl.parent.parent.name.isdigit()
    ]
    if debian:
        return max(debian, key=lambda bin_dir: int(bin_dir.parent.name))
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl is not None else None


def ensure_postgres_bin_dir() -> Path:
    """The PostgreSQL programs, installed with apt-get first if they are missing and this
    machine has it."""
    bin_dir = find_postgres_bin_dir()
    if bin_dir is not None:
        return bin_dir
    if shutil.which("apt-get") is None:
        raise StackError(f"PostgreSQL was not found. {INSTALL_HINT}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print(f"PostgreSQL is missing: installing Debian's {DEBIAN_PACKAGE} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", DEBIAN_PACKAGE],
    ):
        if subprocess.run([*sudo, *command], env=env, check=False).returncode != 0:
            raise StackError(f"`{' '.join([*sudo, *command])}` failed. {INSTALL_HINT}")
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        raise StackError(f"{DEBIAN_PACKAGE} was installed but pg_ctl is still missing.")
    return bin_dir


def local_postgres(settings: Settings, port: int | None = None) -> LocalPostgres:
    """The server under the run directory. Its port and database: `port` if given, else those
    of DEDUPE_URL when that names a PostgreSQL on this machine, else the defaults."""
    database = DEFAULT_DATABASE
    if settings.dedupe_url is not None and settings.dedupe_url.startswith("postgres"):
        url = urlsplit(settings.dedupe_url)
        if url.hostname in ("127.0.0.1", "localhost"):
            port = port or url.port or 5432
            database = url.path.lstrip("/") or database
    return LocalPostgres(settings.run_dir / "postgres", port or DEFAULT_PORT, database)


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        result = subprocess.run(
            ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
        return result.stdout


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.postgres", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--port", type=int, help=f"default: DEDUPE_URL's, else {DEFAULT_PORT}")
    arguments = parser.parse_args()
    server = local_postgres(load_local_settings(), arguments.port)
    try:
        if arguments.command == "start":
            start = server.start()
            verb = "is already running" if start.already_running else "is ready"
            print(
                f"PostgreSQL {verb} on {server.host}:{server.port} (pid {start.pid}, log "
                f"{server.log_file}). Workers share it with DEDUPE_URL={server.url}"
            )
        elif arguments.command == "stop":
            print("PostgreSQL stopped." if server.stop() else "PostgreSQL is not running.")
        else:
            pid = server.running_pid()
            where = f"{server.host}:{server.port}, DEDUPE_URL={server.url}"
            print(f"PostgreSQL runs (pid {pid}) on {where}" if pid else "PostgreSQL is stopped.")
    except StackError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
