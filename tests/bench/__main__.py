"""`python -m tests.bench [--quick]`: measure every stage of the pipeline side by side in one
run, on a private broker and private stacks; print a table and one summary line, write the raw
figures as JSON and a chart as PNG to the run directory."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.local.kafka import kafka_version
from deploy.local.settings import load_local_settings
from shared.event_loop import run
from tests.bench.chart import draw_chart
from tests.bench.console_stage import console_watching
from tests.bench.lifecycle_stages import drain_with_deferrals, status_delay
from tests.bench.mailpit_stage import sink_against_mailpit
from tests.bench.relay_stage import remote_relay
from tests.bench.scale_out import cluster_drain, postgres_store
from tests.bench.stages import (
    FULL,
    QUICK,
    Bench,
    api_accept_rate,
    backlog_drain,
    latency,
    naive_baseline,
    pipeline_through_api,
    restart_resumption,
    sink_ceiling,
    tls_drain,
)
from tests.private_stack import private_broker

MB = 1_000_000

# The targets for a 2-core machine; the ratios come from figures of one run.
TARGETS = {
    "drain/ceiling": 0.8,
    "api/ceiling": 0.5,
    "vs-naive": 3.0,
    "p99_ms": 50.0,
    "api/http": 0.4,
    "restart_s": 3.0,
    "worker_rss_mb": 100.0,
    "api_rss_mb": 120.0,
    "console/drain": 0.95,  # the drain with the console and 50 pages open, against without
    "sink/mailpit": 1.0,  # SMTP ingest, the same emails over the same connections
    "deferred/plain": 0.9,  # the drain with 1 % of recipients deferred, against 0 %
    "pg/sqlite": 0.7,  # the drain with the PostgreSQL dedupe store, against SQLite
    # The worker's CPU per email draining, against the direct SMTP client's in the ceiling stage.
    "cpu/client": 1.5,
    "relay/bound": 0.8,  # against a relay 20 ms away: partitions x lanes / transaction time
}
LOWER_IS_BETTER = {"p99_ms", "restart_s", "worker_rss_mb", "api_rss_mb", "cpu/client"}
# Reported side by side, with no target of their own yet.
UNTARGETED = ("cluster/single", "status_p50_ms", "status_p99_ms")


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ratios(stages: dict[str, dict[str, Any]], peak_rss: dict[str, int]) -> dict[str, float]:
    ceiling = stages["sink ceiling"]["emails_per_second"]
    through_api = stages["pipeline through the API"]["emails_per_second"]
    return {
        "drain/ceiling": stages["backlog drain"]["emails_per_second"] / ceiling,
        "api/ceiling": through_api / ceiling,
        "vs-naive": through_api / stages["naive baseline"]["emails_per_second"],
        "p99_ms": stages["latency"]["p99_ms"],
        "api/http": stages["API accept rate"]["produce_per_second"]
        / stages["API accept rate"]["http_per_second"],
        "restart_s": stages["restart"]["restart_to_first_delivery_s"],
        "worker_rss_mb": peak_rss.get("worker", 0) / MB,
        "api_rss_mb": peak_rss.get("api", 0) / MB,
        "console/drain": stages["console watching"]["drain_emails_per_second"]
        / stages["console watching"]["plain_drain_emails_per_second"],
        "sink/mailpit": stages["sink against Mailpit"]["sink/mailpit"],
        "cluster/single": stages["drain on a 3-broker cluster"]["emails_per_second"]
        / stages["backlog drain"]["emails_per_second"],
        "pg/sqlite": stages["drain with the PostgreSQL store"]["emails_per_second"]
        / stages["backlog drain"]["emails_per_second"],
        "deferred/plain": stages["drain with 1 % deferred"]["emails_per_second"]
        / stages["backlog drain"]["emails_per_second"],
        "status_p50_ms": stages["status delay"]["p50_ms"],
        "status_p99_ms": stages["status delay"]["p99_ms"],
        "cpu/client": stages["backlog drain"]["cpu_ms_per_email"]["worker"]
        / stages["sink ceiling"]["cpu_ms_per_email"]["client"],
        "relay/bound": stages["remote relay"]["relay/bound"],
    }


def meets(name: str, value: float) -> bool:
    target = TARGETS[name]
    return value <= target if name in LOWER_IS_BETTER else value >= target


def summary_line(figures: dict[str, float], rate: float) -> str:
    return (
        f"bench: drain/ceiling={figures['drain/ceiling']:.2f} "
        f"api/ceiling={figures['api/ceiling']:.2f} "
        f"vs-naive={figures['vs-naive']:.1f}x "
        f"p99@{rate:g}={figures['p99_ms']:.0f}ms "
        f"api/http={figures['api/http']:.2f} "
        f"restart={figures['restart_s']:.1f}s "
        f"worker-rss={figures['worker_rss_mb']:.0f}MB "
        f"api-rss={figures['api_rss_mb']:.0f}MB "
        f"console/drain={figures['console/drain']:.2f} "
        f"sink/mailpit={figures['sink/mailpit']:.2f} "
        f"cluster/single={figures['cluster/single']:.2f} "
        f"pg/sqlite={figures['pg/sqlite']:.2f} "
        f"deferred/plain={figures['deferred/plain']:.2f} "
        f"status-delay={figures['status_p50_ms']:.0f}/{figures['status_p99_ms']:.0f}ms "
        f"cpu/client={figures['cpu/client']:.2f} "
        f"relay/bound={figures['relay/bound']:.2f}"
    )


def stage_rows(stages: dict[str, dict[str, Any]], peak_rss: dict[str, int]) -> list[str]:
    def rate(stage: str) -> str:
        return f"{stages[stage]['emails_per_second']:,.0f} emails/s"

    latency, api, restart = stages["latency"], stages["API accept rate"], stages["restart"]
    console, versus = stages["console watching"], stages["sink against Mailpit"]
    tls = stages["drain over STARTTLS and AUTH"]
    deferred, status = stages["drain with 1 % deferred"], stages["status delay"]
    cluster, postgres = (
        stages["drain on a 3-broker cluster"],
        stages["drain with the PostgreSQL store"],
    )
    requests = console["kafka_requests_per_second_by_pages"]
    relay = stages["remote relay"]
    rows = [
        (
            f"sink ceiling (direct SMTP, {stages['sink ceiling']['connections']} connections)",
            rate("sink ceiling"),
        ),
        ("pipeline through the API", rate("pipeline through the API")),
        ("backlog drain (worker alone)", rate("backlog drain")),
        ("naive baseline", rate("naive baseline")),
        (
            f"latency at {latency['offered_per_second']:g} emails/s",
            f"p50 {latency['p50_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms, "
            f"p99 {latency['p99_ms']:.1f} ms, max {latency['max_ms']:.1f} ms",
        ),
        (
            "API accept (acks=all)",
            f"{api['produce_per_second']:,.0f} req/s, p50 {api['produce_p50_ms']:.1f} ms, "
            f"p99 {api['produce_p99_ms']:.1f} ms",
        ),
        (
            "API HTTP ceiling (dry_run)",
            f"{api['http_per_second']:,.0f} req/s, p50 {api['http_p50_ms']:.1f} ms, "
            f"p99 {api['http_p99_ms']:.1f} ms",
        ),
        ("worker restart to first delivery", f"{restart['restart_to_first_delivery_s']:.2f} s"),
        (
            "a second worker joins",
            f"{restart['second_worker_start_to_both_owning_s']:.2f} s from its start to both "
            f"owning partitions; the rebalance held the first "
            f"{restart['rebalance_held_first_worker_s']:.3f} s",
        ),
        (
            "backlog drain over STARTTLS and AUTH",
            f"{tls['emails_per_second']:,.0f} emails/s "
            f"({tls['emails_per_second'] / stages['backlog drain']['emails_per_second']:.2f} "
            "of the plain drain)",
        ),
        (
            "backlog drain on a 3-broker cluster (RF 3)",
            f"{cluster['emails_per_second']:,.0f} emails/s "
            f"({cluster['emails_per_second'] / stages['backlog drain']['emails_per_second']:.2f} "
            "of the single broker's); the cluster started in "
            f"{cluster['cluster_start_seconds']:.1f} s",
        ),
        (
            "backlog drain, 1 % of recipients deferred",
            f"{deferred['emails_per_second']:,.0f} emails/s "
            f"({deferred['emails_per_second'] / stages['backlog drain']['emails_per_second']:.2f} "
            "of the plain drain)",
        ),
        (
            f"status delay at {status['offered_per_second']:g} emails/s",
            f"p50 {status['p50_ms']:.1f} ms, p99 {status['p99_ms']:.1f} ms, max "
            f"{status['max_ms']:.1f} ms from the sink storing an email to GET saying delivered",
        ),
        (
            "backlog drain, PostgreSQL dedupe store",
            f"{postgres['emails_per_second']:,.0f} emails/s "
            f"({postgres['emails_per_second'] / stages['backlog drain']['emails_per_second']:.2f} "
            "of SQLite's)",
        ),
        *(
            (
                f"250 to store write, {store}",
                f"p50 {instant['p50']:.3f} ms, p99 {instant['p99']:.3f} ms, "
                f"max {instant['max']:.3f} ms",
            )
            for store, instant in postgres["write_instant_ms"].items()
        ),
        (
            f"backlog drain, console + {console['pages']} pages open",
            f"{console['drain_emails_per_second']:,.0f} emails/s (without, in turns: "
            f"{console['plain_drain_emails_per_second']:,.0f})",
        ),
        (
            "console's Kafka requests by pages open",
            ", ".join(f"{rate:.1f}/s with {pages}" for pages, rate in sorted(requests.items())),
        ),
        (
            "console page update, delivery to marker",
            f"p50 {console['page_update_p50_s'] * 1000:.0f} ms, "
            f"max {console['page_update_max_s'] * 1000:.0f} ms",
        ),
        (
            "SMTP ingest, our sink against Mailpit",
            f"{versus['sink_emails_per_second']:,.0f} against "
            f"{versus['mailpit_emails_per_second']:,.0f} emails/s ("
            + ", ".join(
                f"{connections} connections: {rates['sink']:,.0f} / {rates['mailpit']:,.0f}"
                for connections, rates in versus["by_connections"].items()
            )
            + ")",
        ),
        (
            "CPU per email, direct client (ceiling)",
            cpu_ms(stages["sink ceiling"]["cpu_ms_per_email"]),
        ),
        ("CPU per email, backlog drain", cpu_ms(stages["backlog drain"]["cpu_ms_per_email"])),
        (
            "CPU per email, through the API",
            cpu_ms(stages["pipeline through the API"]["cpu_ms_per_email"]),
        ),
        (
            f"relay {relay['delay_ms']} ms away: one transaction",
            f"{relay['transaction_ms']:.1f} ms (the direct client, connection open)",
        ),
        *(
            (
                f"relay {relay['delay_ms']} ms away, {lanes} lanes x {relay['partitions']}",
                f"{row['emails_per_second']:,.0f} emails/s, bound {row['bound']:,.0f} "
                f"({row['ratio']:.2f})" + (" default" if lanes == relay["default_lanes"] else ""),
            )
            for lanes, row in relay["by_lanes"].items()
        ),
        (
            "peak RSS",
            ", ".join(f"{kind} {peak / MB:.0f} MB" for kind, peak in sorted(peak_rss.items())),
        ),
    ]
    return [f"{stage:<46} {value}" for stage, value in rows]


def cpu_ms(per_email: dict[str, float]) -> str:
    """`worker 0.95 ms, kafka 0.31 ms, smtp_sink 0.34 ms`"""
    return ", ".join(f"{name} {ms:.3f} ms" for name, ms in per_email.items())


def target_rows(figures: dict[str, float]) -> list[str]:
    rows = []
    for name, value in figures.items():
        if name in UNTARGETED:
            rows.append(f"{name:<16} {value:>9.2f}   reported")
            continue
        sign = "<=" if name in LOWER_IS_BETTER else ">="
        verdict = "meets" if meets(name, value) else "MISSES"
        rows.append(f"{name:<16} {value:>9.2f}   target {sign} {TARGETS[name]:g}   {verdict}")
    return rows


STAGES: list[tuple[str, Callable[[Bench], Awaitable[dict[str, Any]]]]] = [
    ("sink ceiling", sink_ceiling),
    ("backlog drain", backlog_drain),
    ("pipeline through the API", pipeline_through_api),
    ("naive baseline", naive_baseline),
    ("latency", latency),
    ("API accept rate", api_accept_rate),
    ("restart", restart_resumption),
    ("drain over STARTTLS and AUTH", tls_drain),
    ("console watching", console_watching),
    ("sink against Mailpit", sink_against_mailpit),
    ("drain on a 3-broker cluster", cluster_drain),
    ("drain with the PostgreSQL store", postgres_store),
    ("drain with 1 % deferred", drain_with_deferrals),
    ("status delay", status_delay),
    ("remote relay", remote_relay),
]


async def run_stages(bench: Bench) -> dict[str, dict[str, Any]]:
    results = {}
    for name, stage in STAGES:
        print(f"  {name} ...", flush=True)
        results[name] = await stage(bench)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: checks the bench works")
    parser.add_argument("--run-dir", type=Path, help="default: RUN_DIR/bench/<time>")
    parser.add_argument("--emails", type=int, help="emails per throughput stage")
    parser.add_argument("--chart", type=Path, help="also write the chart here")
    arguments = parser.parse_args()

    settings = load_local_settings()
    sizes = QUICK if arguments.quick else FULL
    if arguments.emails:
        sizes = dataclasses.replace(sizes, emails=arguments.emails)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = arguments.run_dir or settings.run_dir / "bench" / stamp
    broker = private_broker(run_dir, settings.kafka_libs_dir)
    about: dict[str, Any] = {
        "machine": machine(),
        "kafka": kafka_version(settings.kafka_libs_dir),
        "sizes": sizes.__dict__,
        "partitions": settings.topic_partitions,
        # As the stacks run them (each stack's ports and names aside).
        "worker_settings": {
            name: value
            for name, value in Bench(broker, run_dir, sizes)
            .stack("settings")
            .settings.model_dump(mode="json")
            .items()
            if name.startswith("worker_") and name not in ("worker_host", "worker_port")
        },
    }
    print(
        f"bench: {'quick' if arguments.quick else 'full'} run on {about['machine']['cores']} cores "
        f"({about['machine']['cpu']}), Kafka {about['kafka']}, {settings.topic_partitions} "
        f"partitions, in {run_dir}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop what started, as Ctrl+C
    broker.start()
    try:
        bench = Bench(broker, run_dir, sizes)
        stages = run(run_stages(bench))  # uvloop: the clients cost the 2 cores less
    finally:
        broker.stop()

    figures = ratios(stages, bench.peak_rss_bytes)
    print()
    print("\n".join(stage_rows(stages, bench.peak_rss_bytes)))
    print()
    print("\n".join(target_rows(figures)))
    print()
    chart = run_dir / "bench.png"
    draw_chart(bench.timelines, stages, about, chart, also=arguments.chart)
    report = run_dir / "bench-results.json"
    stages["latency"]["latencies_ms"] = sorted(stages["latency"]["latencies_ms"])
    report.write_text(
        json.dumps(
            {**about, "stages": stages, "figures": figures, "peak_rss_bytes": bench.peak_rss_bytes},
            indent=2,
        )
    )
    print(f"results: {report}")
    print(f"chart: {chart}")
    print(summary_line(figures, sizes.rate))
    sys.exit(0)


if __name__ == "__main__":
    main()
