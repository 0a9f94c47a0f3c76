"""The browser that the browser tests and `make screenshot` drive: Debian's Chromium, launched
by Playwright through its path (Playwright's own browser download is not used)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from deploy.local.errors import StackError

# Headless on a machine with no display and a closed network: no sandbox (CI runs as root), no
# background calls home (they fail here, many at a time, and slow every start).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "Install it (Debian/Ubuntu: sudo apt-get install chromium; macOS: brew install --cask "
    "chromium) or set CHROMIUM_PATH to a Chromium or Chrome executable."
)


def find_chromium(chromium_path: str) -> Path:
    """CHROMIUM_PATH as a path, or as a name on PATH; a clear error when there is none."""
    found = shutil.which(chromium_path)
    if found is None:
        raise StackError(
            f"Chromium was not found (CHROMIUM_PATH={chromium_path!r}). {INSTALL_HINT}"
        )
    return Path(found)


def ensure_chromium(chromium_path: str) -> Path:
    """The browser, installed with apt-get first if it is missing and this machine has it."""
    try:
        return find_chromium(chromium_path)
    except StackError:
        if shutil.which("apt-get") is None:
            raise
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print("Chromium is missing: installing Debian's chromium with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run([*sudo, *command], env=env, check=False).returncode != 0:
            raise StackError(f"`{' '.join([*sudo, *command])}` failed. {INSTALL_HINT}")
    return find_chromium(chromium_path)
