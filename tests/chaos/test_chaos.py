"""The chaos scenarios in quick mode, inside `make test`: every scenario, small counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import PROJECT_ROOT

SCENARIOS = (
    "clean-restarts", "hard-kills", "broker-restarts", "smtp-outage",
    "scale-out-failover", "poison-and-bounce", "client-retries",
)  # fmt: skip


@pytest.mark.timeout(1500)
def test_quick_chaos_loses_nothing_and_delivers_nothing_twice(tmp_path: Path) -> None:
    chaos = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos", "--quick", "--run-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = chaos.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        chaos.terminate()  # SIGTERM: the harness stops every stack it started
        output, _ = chaos.communicate(timeout=120)
    print(output)

    assert chaos.returncode == 0, output
    assert (tmp_path / "chaos-results.json").is_file()
    for scenario in SCENARIOS:
        assert f"\n{scenario} " in output
