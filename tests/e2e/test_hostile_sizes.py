"""The largest email the API accepts, through the running stack: delivered, and neither the
API's nor the worker's event loop stalls more than 100 ms for it (their lag histograms)."""

from __future__ import annotations

from tests.e2e.conftest import RunningStack
from tests.e2e.test_metrics import Samples, scrape, value
from tests.unit.worker.largest_email import largest_email

STALL_SECONDS = "0.1"  # a bucket bound of shared/loop_lag.py's histogram


def stalls(samples: Samples, service: str) -> float:
    """How many of the service's lag samples were over 100 ms, since it started."""
    histogram = f"email_{service}_event_loop_lag_seconds"
    return value(samples, f"{histogram}_count") - value(
        samples, f"{histogram}_bucket", le=STALL_SECONDS
    )


def test_the_largest_accepted_email_is_delivered_and_stalls_no_event_loop(
    stack: RunningStack,
) -> None:
    urls = {
        "api": stack.api_url,
        "worker": f"http://127.0.0.1:{stack.settings.worker_port}",
    }
    before = {service: scrape(url) for service, url in urls.items()}
    email = largest_email().model_dump(
        mode="json",
        by_alias=True,
        exclude={"schema_version", "message_id", "created_at"},
        exclude_none=True,
    )

    response = stack.post_email(email)
    assert response.status_code == 202, response.text
    stack.wait_until_delivered(response.json()["id"])

    after = {service: scrape(url) for service, url in urls.items()}
    for service in urls:
        assert value(after[service], f"email_{service}_event_loop_lag_seconds_count") > value(
            before[service], f"email_{service}_event_loop_lag_seconds_count"
        ), f"the {service}'s loop was not sampled meanwhile"
        over = stalls(after[service], service) - stalls(before[service], service)
        assert over == 0, f"the {service}'s event loop stalled over 100 ms {over:g} time(s)"
