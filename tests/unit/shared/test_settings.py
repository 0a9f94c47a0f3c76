"""Settings: the seed's names by default, and bootstrap servers that are host and port (the
environment, paths and invalid values: tests/unit/deploy/local/test_settings.py)."""

from __future__ import annotations

import pytest

from shared.settings import Settings


def test_defaults_are_the_seeds_names() -> None:
    settings = Settings(_env_file=None)

    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.email_topic == "email.send"
    assert settings.dlq_topic == "email.send.dlq"
    assert settings.consumer_group == "email-send-group"
    assert settings.topic_partitions == 3


@pytest.mark.parametrize("servers", ["localhost", "localhost:", ":9092", "localhost:99999"])
def test_bootstrap_servers_must_be_host_and_port(servers: str) -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        Settings(_env_file=None, kafka_bootstrap_servers=servers)


# The sink's rate limit and simulator (issue 16).


@pytest.mark.parametrize(("given", "limit"), [("50", 50), (" 7 ", 7), ("", None), (3, 3)])
def test_sink_rate_limit_is_a_whole_number_or_unset(given: object, limit: int | None) -> None:
    assert Settings(_env_file=None, sink_rate_limit=given).sink_rate_limit == limit


def test_sink_rate_limit_is_unset_by_default_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).sink_rate_limit is None
    monkeypatch.setenv("SINK_RATE_LIMIT", "")
    assert Settings(_env_file=None).sink_rate_limit is None
    monkeypatch.setenv("SINK_RATE_LIMIT", "20")
    assert Settings(_env_file=None).sink_rate_limit == 20


@pytest.mark.parametrize("given", ["0", "-3", "2.5", "fast", "²", True, 0])
def test_sink_rate_limit_says_what_it_expects(given: object) -> None:
    with pytest.raises(ValueError, match="expected a whole number of emails a second, at least 1"):
        Settings(_env_file=None, sink_rate_limit=given)


def test_the_slow_simulator_address_waits_ten_seconds_unless_set() -> None:
    assert Settings(_env_file=None).sink_simulator_slow_seconds == 10.0
    assert (
        Settings(_env_file=None, sink_simulator_slow_seconds=0.5).sink_simulator_slow_seconds == 0.5
    )
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        Settings(_env_file=None, sink_simulator_slow_seconds=-1)
