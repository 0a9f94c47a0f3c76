"""Building Mailpit once: a second run neither starts Go nor needs the network; no Go, a clear
error that says how to install it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploy.local.errors import StackError
from deploy.local.mailpit import MAILPIT_VERSION, fetch_mailpit, mailpit_binary


def test_a_built_mailpit_is_reused_without_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = mailpit_binary(tmp_path)
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"built before")
    monkeypatch.setattr(shutil, "which", lambda name, path=None: pytest.fail("Go was started"))

    build = fetch_mailpit(tmp_path)

    assert (build.binary, build.built) == (binary, False)
    assert binary.parent.name == MAILPIT_VERSION, "a new version builds beside the old one"


def test_without_go_the_error_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)

    with pytest.raises(StackError, match=r"Go was not found.*Install Go"):
        fetch_mailpit(tmp_path)

    assert not mailpit_binary(tmp_path).exists()
