"""The chaos scenarios in quick mode, inside `make test`: every scenario, small counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.settings import PROJECT_ROOT


@pytest.mark.timeout(1500)
def test_quick_chaos_loses_nothing_and_delivers_nothing_twice(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--quick", "--run-dir", str(tmp_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    print(result.stdout)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "chaos-results.json").is_file()
    for scenario in ("clean-restarts", "hard-kills", "broker-restarts", "smtp-outage",
                     "scale-out-failover", "poison-and-bounce", "client-retries"):  # fmt: skip
        assert f"\n{scenario} " in result.stdout
