"""`python -m tests.chaos [--quick] [--scenario NAME ...]`: run the fault scenarios against a
private stack (its own broker, or three-node cluster, run directory and ports), print one row
per scenario, write the results as JSON, and exit 1 if any scenario lost or duplicated an email
or if its events disagree (or if the per-host SQLite control did not send any twice)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from deploy.local.settings import load_local_settings
from shared.logs import configure_logging
from tests.chaos.cluster_scenarios import CLUSTER_SCENARIOS
from tests.chaos.harness import FULL, QUICK, write_report
from tests.chaos.report import HEADER, Result
from tests.chaos.scenarios import SCENARIOS, Run
from tests.private_cluster import private_cluster
from tests.private_stack import private_broker

ALL_SCENARIOS = SCENARIOS | CLUSTER_SCENARIOS


async def run_scenarios(run: Run, names: list[str]) -> list[Result]:
    results = []
    print(HEADER, flush=True)
    for index, name in enumerate(names):
        try:
            await start_kafka_for(run, name)
            result = await ALL_SCENARIOS[name](run)
        except Exception as error:  # one broken scenario still leaves the others' evidence
            result = Result(name, 0, 0, 0, 0, 0, None, False, details={"error": repr(error)})
        print(result.row(), flush=True)
        results.append(result)
        await stop_kafka_unneeded(run, names[index + 1 :])
    return results


async def start_kafka_for(run: Run, name: str) -> None:
    """The single broker or the three-node cluster, whichever the scenario runs on: started
    before the first scenario that needs it (again if a scenario left it down)."""
    if name in CLUSTER_SCENARIOS:
        assert run.cluster is not None
        await asyncio.to_thread(run.cluster.start)
    else:
        await asyncio.to_thread(run.broker.start)


async def stop_kafka_unneeded(run: Run, later: list[str]) -> None:
    """Stop, by pid, what no later scenario runs on: three JVMs idling beside the single broker
    would weigh on the timings of two cores."""
    if all(name in CLUSTER_SCENARIOS for name in later):
        await asyncio.to_thread(run.broker.stop)
    if run.cluster is not None and not any(name in CLUSTER_SCENARIOS for name in later):
        await asyncio.to_thread(run.cluster.stop)


def describe(result: Result) -> str:
    """The scenario's own evidence, in one line."""
    d = result.details
    facts = [f"redelivered {result.redelivered} (skipped by the dedupe store)"]
    if "max_worker_loop_lag_ms" in d:
        facts.append(f"the worker's event loop lagged {d['max_worker_loop_lag_ms']} ms at most")
    if "recipients_expected" in d:
        facts.append(
            f"{d['recipients_expected']} recipients to deliver, {d['recipients_refused']} the "
            f"sink refuses, {d['deferred_events']} deferrals retried, "
            f"{d['sent_to_the_still_owed_only']} emails sent again to the still owed only"
        )
    if result.duplicates_in_kill_window:
        facts.append(f"duplicates in the SIGKILL window: {d['kill_window_duplicates']}")
    if "accepted_while_broker_down" in d:
        facts.append(
            f"{d['requests_while_broker_down']} requests sent while the broker was down, "
            f"{d['503_while_broker_down']} answered 503 (the slowest in "
            f"{d['slowest_answer_while_broker_down'] or 0:.1f} s), accepted while down "
            f"{d['accepted_while_broker_down']}"
        )
    if "max_lag" in d:
        facts.append(
            f"max lag {d['max_lag']}, drained {d['drain_seconds']:.1f} s after the sink returned"
        )
    if "assignment_before" in d:
        facts.append(
            f"assignment {d['assignment_before']} -> after SIGKILL {d['assignment_after']}"
        )
    if "garbage_produced" in d:
        facts.append(
            f"{d['garbage_produced']} garbage + {d['bounces_accepted']} bounces -> "
            f"{d['dead_letters']} dead letters, {d['dead_letters_with_headers']} with headers, "
            f"lag {d['lag_after_drain']}"
        )
    if d.get("summary"):
        facts.append(d["summary"])
    if result.events_wrong:
        wrong = {
            kind: found["count"]
            for kind, found in d.get("event_problems", {}).items()
            if found["count"]
        }
        facts.append(f"events wrong: {wrong}")
    if d.get("retry_group_lag"):
        facts.append(f"the retry group's lag at the end: {d['retry_group_lag']}")
    if d.get("lost_ids"):
        facts.append(f"lost: {d['lost_ids']}")
    if d.get("error"):
        facts.append(f"the scenario itself failed: {d['error']}")
    if d.get("unanswered_and_sent_again"):
        facts.append(
            f"{len(d['unanswered_and_sent_again'])} requests got no answer and were sent again "
            f"with their key"
        )
    if d.get("client_errors"):
        facts.append(f"client errors: {d['client_errors'][:3]}")
    return "; ".join(facts)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, as in make test")
    parser.add_argument("--scenario", action="append", choices=ALL_SCENARIOS, help="only these")
    parser.add_argument("--run-dir", type=Path, help="default: RUN_DIR/chaos/<time>")
    parser.add_argument("--seed", type=int, default=None, help="for repeatable fault moments")
    parser.add_argument("--emails", type=int, help="override the size's email count")
    parser.add_argument("--cycles", type=int, help="override the size's fault cycles")
    arguments = parser.parse_args()

    settings = load_local_settings()
    configure_logging("WARNING")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = arguments.run_dir or settings.run_dir / "chaos" / stamp
    if run_dir.is_dir() and any(run_dir.iterdir()):
        # Its logs would be appended to, and a scenario counts what its worker's log says.
        sys.exit(
            f"chaos: --run-dir {run_dir} holds an earlier run; give a new directory, or delete "
            "that one first"
        )
    sizes = QUICK if arguments.quick else FULL
    if arguments.emails or arguments.cycles:
        sizes = dataclasses.replace(
            sizes, emails=arguments.emails or sizes.emails, cycles=arguments.cycles or sizes.cycles
        )
    seed = arguments.seed if arguments.seed is not None else random.randrange(1_000_000)
    names = arguments.scenario or list(ALL_SCENARIOS)
    broker = private_broker(run_dir, settings.kafka_libs_dir)
    # Made (not started) only when a scenario runs on it.
    cluster = (
        private_cluster(run_dir / "cluster", settings.kafka_libs_dir)
        if any(name in CLUSTER_SCENARIOS for name in names)
        else None
    )
    print(f"chaos: {'quick' if arguments.quick else 'full'} run, seed {seed}, in {run_dir}")
    # SIGTERM (a test's timeout, Ctrl+C's sibling) unwinds like Ctrl+C, so every stack started
    # so far is stopped by the finally blocks instead of left running.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        run = Run(broker, run_dir, sizes, random.Random(seed), cluster)
        results = asyncio.run(run_scenarios(run, names))
    finally:
        broker.stop()
        if cluster is not None:
            cluster.stop()
    print()
    for result in results:
        print(f"{result.scenario}: {describe(result)}")
    report = run_dir / "chaos-results.json"
    write_report(results, report, sizes)
    print(f"results: {report}")
    sys.exit(0 if all(result.passed for result in results) else 1)


if __name__ == "__main__":
    main()
