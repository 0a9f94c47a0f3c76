"""shared.loop_lag: a loop blocked by synchronous code shows as lag, in a histogram and the
largest sample since start, under the prefix each service gives."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from shared.loop_lag import LoopLag


def block_the_loop(seconds: float) -> None:
    """What a synchronous call in a request handler does: nothing else on the loop runs."""
    time.sleep(seconds)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, f"{name} is not exported"
    return value


async def test_a_loop_blocked_for_300_ms_shows_300_ms_of_lag() -> None:
    registry = CollectorRegistry()
    lag = LoopLag("email_test", registry, interval_seconds=0.01)

    async with lag.sampling():
        await asyncio.sleep(0.05)
        block_the_loop(0.3)
        await asyncio.sleep(0.05)

    samples = sample(registry, "email_test_event_loop_lag_seconds_count")
    assert 0.28 <= lag.max_lag_seconds < 0.45
    assert sample(registry, "email_test_event_loop_lag_max_seconds") == lag.max_lag_seconds
    assert samples >= 5
    assert sample(registry, "email_test_event_loop_lag_seconds_bucket", le="0.25") < samples
    assert sample(registry, "email_test_event_loop_lag_seconds_bucket", le="0.5") == samples


async def test_the_default_interval_sees_a_block_less_the_time_left_to_the_next_sample() -> None:
    lag = LoopLag("email_test", CollectorRegistry())

    async with lag.sampling():
        await asyncio.sleep(0.15)
        block_the_loop(0.3)
        await asyncio.sleep(0.01)

    assert lag.interval_seconds == 0.1
    assert 0.19 <= lag.max_lag_seconds < 0.45


async def test_a_loop_that_keeps_up_shows_almost_no_lag() -> None:
    registry = CollectorRegistry()
    lag = LoopLag("email_test", registry, interval_seconds=0.01)

    async with lag.sampling():
        await asyncio.sleep(0.2)

    assert lag.max_lag_seconds < 0.1
    assert sample(registry, "email_test_event_loop_lag_seconds_count") >= 5


async def test_sampling_stops_with_its_block() -> None:
    registry = CollectorRegistry()
    lag = LoopLag("email_test", registry, interval_seconds=0.01)
    async with lag.sampling():
        await asyncio.sleep(0.05)
    samples = sample(registry, "email_test_event_loop_lag_seconds_count")

    await asyncio.sleep(0.05)

    assert sample(registry, "email_test_event_loop_lag_seconds_count") == samples
    assert not [task for task in asyncio.all_tasks() if task.get_name() == "event loop lag"]


def test_each_prefix_gets_its_own_metrics() -> None:
    registry = CollectorRegistry()
    LoopLag("email_api", registry)
    LoopLag("email_worker", registry)

    names = {metric.name for metric in registry.collect()}

    assert names == {
        "email_api_event_loop_lag_seconds",
        "email_api_event_loop_lag_max_seconds",
        "email_worker_event_loop_lag_seconds",
        "email_worker_event_loop_lag_max_seconds",
    }
