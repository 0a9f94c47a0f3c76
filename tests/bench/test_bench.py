"""The benchmark in quick mode, inside `make test`: it runs end to end and reports every figure.
No timing is asserted here; `make bench` measures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_harness

SUMMARY = re.compile(
    r"^bench: drain/ceiling=\d+\.\d\d api/ceiling=\d+\.\d\d vs-naive=\d+\.\dx "
    r"p99@\d+=\d+ms api/http=\d+\.\d\d restart=\d+\.\ds worker-rss=\d+MB api-rss=\d+MB "
    r"console/drain=\d+\.\d\d sink/mailpit=\d+\.\d\d cluster/single=\d+\.\d\d "
    r"pg/sqlite=\d+\.\d\d deferred/plain=\d+\.\d\d status-delay=\d+/\d+ms "
    r"cpu/client=\d+\.\d\d relay/bound=\d+\.\d\d$",
    re.MULTILINE,
)


@pytest.mark.timeout(900)
def test_the_quick_bench_reports_every_stage(tmp_path: Path) -> None:
    returncode, output = run_harness(
        "tests.bench", "--quick", "--run-dir", str(tmp_path), timeout=600
    )

    assert returncode == 0, output
    assert SUMMARY.search(output), output
    report = json.loads((tmp_path / "bench-results.json").read_text())
    assert report["machine"]["cores"] >= 1
    assert set(report["stages"]) == {
        "sink ceiling", "backlog drain", "pipeline through the API", "naive baseline",
        "latency", "API accept rate", "restart", "drain over STARTTLS and AUTH", "console watching",
        "sink against Mailpit", "drain on a 3-broker cluster", "drain with the PostgreSQL store",
        "drain with 1 % deferred", "status delay", "remote relay",
    }  # fmt: skip
    assert {"api", "worker", "smtp_sink", "console"} <= set(report["peak_rss_bytes"])
    stages = report["stages"]
    assert set(stages["sink ceiling"]["cpu_ms_per_email"]) == {"client", "smtp_sink"}
    assert set(stages["backlog drain"]["cpu_ms_per_email"]) == {"worker", "smtp_sink", "kafka"}
    assert set(stages["pipeline through the API"]["cpu_ms_per_email"]) == {
        "api", "worker", "smtp_sink", "kafka",
    }  # fmt: skip
    relay = stages["remote relay"]
    assert str(relay["default_lanes"]) in relay["by_lanes"]
    # Two delayed replies at least: the group of MAIL, RCPT and DATA, then the message's.
    assert relay["transaction_ms"] >= 2 * relay["delay_ms"]
    assert report["figures"]["cpu/client"] > 0
    assert (tmp_path / "bench.png").read_bytes().startswith(b"\x89PNG")


def test_the_worker_steps_the_client_skips_are_each_timed_and_added_up() -> None:
    returncode, output = run_harness("tests.bench.worker_steps", "--repeat", "1", timeout=120)

    assert returncode == 0, output
    timed = re.findall(r"^(.+?) +(\d+\.\d) us", output, re.MULTILINE)
    assert [name for name, _ in timed] == [
        "parse the record", "render MIME", "the accepted event", "the events' Reply",
        "a sent event", "together",
    ]  # fmt: skip
    steps, together = [float(us) for _, us in timed[:-1]], float(timed[-1][1])
    assert together == pytest.approx(sum(steps), abs=0.3)
