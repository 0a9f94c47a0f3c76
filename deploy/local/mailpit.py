"""Mailpit, the SMTP sink most teams test with, built once from the Go module proxy into the
git-ignored cache, as the Kafka jars are fetched: the reference our sink is held to."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.local.errors import StackError

MAILPIT_MODULE = "github.com/axllent/mailpit"
MAILPIT_VERSION = "v1.33.1"
GO_DEFAULT_BIN = "/usr/local/go/bin"
INSTALL_GO = (
    "Install Go 1.24 or newer (Debian/Ubuntu: sudo apt-get install golang; macOS: brew install "
    "go), or put its bin directory on PATH."
)


@dataclass(frozen=True)
class MailpitBuild:
    binary: Path
    built: bool
    seconds: float


def mailpit_binary(cache_dir: Path) -> Path:
    return cache_dir / MAILPIT_VERSION / "mailpit"


def fetch_mailpit(cache_dir: Path) -> MailpitBuild:
    """Build Mailpit into cache_dir/<version>/ with `go install`, unless it is there already.

    The version is in the path, so a second run neither starts Go nor needs the network, and
    a new MAILPIT_VERSION builds beside the old one.
    """
    started = time.monotonic()
    binary = mailpit_binary(cache_dir)
    if binary.is_file():
        return MailpitBuild(binary, built=False, seconds=time.monotonic() - started)
    # go.dev's installer puts Go in /usr/local/go, which is not always on PATH.
    go = shutil.which("go") or shutil.which("go", path=GO_DEFAULT_BIN)
    if go is None:
        raise StackError(
            f"Go was not found: it builds Mailpit from the Go module proxy. {INSTALL_GO}"
        )
    partial_dir = binary.parent.with_name(binary.parent.name + ".partial")
    shutil.rmtree(partial_dir, ignore_errors=True)
    result = subprocess.run(
        [go, "install", f"{MAILPIT_MODULE}@{MAILPIT_VERSION}"],
        env={**os.environ, "GOBIN": str(partial_dir)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise StackError(
            f"Go could not build Mailpit {MAILPIT_VERSION} ({MAILPIT_MODULE}). Check that this "
            "machine reaches the Go module proxy (GOPROXY, default https://proxy.golang.org) and "
            "run the command again; once built, Mailpit is kept in "
            f"{binary.parent} and no network is needed. Go said:\n  "
            + "\n  ".join(result.stderr.strip().splitlines()[-6:])
        )
    shutil.rmtree(binary.parent, ignore_errors=True)
    partial_dir.rename(binary.parent)
    return MailpitBuild(binary, built=True, seconds=time.monotonic() - started)
