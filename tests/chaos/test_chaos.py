"""The chaos scenarios in quick mode, inside `make test`: every scenario, small counts; those on
the single broker and those on the three-node cluster in a run each. Each also reconciles
email.events, and fails if they disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_harness

SCENARIOS = (
    "clean-restarts", "hard-kills", "broker-restarts", "smtp-outage",
    "scale-out-failover", "poison-and-bounce", "client-retries", "greylisting",
    "retry-under-kills",
)  # fmt: skip
CLUSTER_SCENARIOS = (
    "cluster-leader-kill", "cluster-two-down", "cluster-rolling-restart", "worker-host-lost",
    "worker-host-lost-sqlite-control", "postgres-restart",
)  # fmt: skip


def quick_chaos(scenarios: tuple[str, ...], run_dir: Path, timeout: float) -> str:
    chosen = [argument for scenario in scenarios for argument in ("--scenario", scenario)]
    returncode, output = run_harness(
        "tests.chaos", "--quick", *chosen, "--run-dir", str(run_dir), timeout=timeout
    )

    assert returncode == 0, output
    assert (run_dir / "chaos-results.json").is_file()
    for scenario in scenarios:
        assert f"\n{scenario} " in output
    return output


@pytest.mark.timeout(1500)
def test_quick_chaos_loses_nothing_and_delivers_nothing_twice(tmp_path: Path) -> None:
    quick_chaos(SCENARIOS, tmp_path, timeout=1200)


@pytest.mark.timeout(1100)
def test_quick_chaos_on_the_cluster_loses_nothing_and_only_per_host_stores_send_twice(
    tmp_path: Path,
) -> None:
    # worker-host-lost-sqlite-control passes only when per-host stores did send emails twice.
    quick_chaos(CLUSTER_SCENARIOS, tmp_path, timeout=900)


def test_a_run_directory_that_holds_an_earlier_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "hard-kills" / "logs").mkdir(parents=True)

    returncode, output = run_harness(
        "tests.chaos", "--quick", "--scenario", "hard-kills", "--run-dir", str(tmp_path), timeout=60
    )

    assert returncode == 1
    assert f"chaos: --run-dir {tmp_path} holds an earlier run" in output
    assert not (tmp_path / "kafka").exists(), "no broker was started"
