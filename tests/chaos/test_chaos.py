"""The chaos scenarios in quick mode, inside `make test`: every scenario, small counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_harness

SCENARIOS = (
    "clean-restarts", "hard-kills", "broker-restarts", "smtp-outage",
    "scale-out-failover", "poison-and-bounce", "client-retries", "greylisting",
)  # fmt: skip


@pytest.mark.timeout(1500)
def test_quick_chaos_loses_nothing_and_delivers_nothing_twice(tmp_path: Path) -> None:
    returncode, output = run_harness(
        "tests.chaos", "--quick", "--run-dir", str(tmp_path), timeout=1200
    )

    assert returncode == 0, output
    assert (tmp_path / "chaos-results.json").is_file()
    for scenario in SCENARIOS:
        assert f"\n{scenario} " in output
