"""Settings: the seed's names by default, and bootstrap servers that are host and port (the
environment, paths and invalid values: tests/unit/deploy/local/test_settings.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from shared.settings import Settings, settings_or_exit


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


def test_the_events_and_retry_topics_have_an_mtas_defaults() -> None:
    settings = Settings(_env_file=None)

    assert settings.events_topic == "email.events"
    assert [step.label for step in settings.worker_retry_schedule] == [
        "1m", "5m", "15m", "30m", "60m"
    ]  # fmt: skip
    assert settings.worker_max_retry_age == timedelta(hours=24)


@pytest.mark.parametrize(
    ("schedule", "max_age", "delays", "age"),
    [
        ("2s,5s", "40s", [2, 5], 40),
        ("1m", "86400", [60], 86400),
        ("30S, 2M", "2h", [30, 120], 7200),
    ],
)
def test_the_retry_schedule_and_age_limit_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, schedule: str, max_age: str, delays: list[int], age: int
) -> None:
    monkeypatch.setenv("WORKER_RETRY_SCHEDULE", schedule)
    monkeypatch.setenv("WORKER_MAX_RETRY_AGE", max_age)

    settings = Settings(_env_file=None)

    assert [step.delay.total_seconds() for step in settings.worker_retry_schedule] == delays
    assert settings.worker_max_retry_age.total_seconds() == age


@pytest.mark.parametrize(
    ("variables", "line"),
    [
        (
            {"WORKER_RETRY_SCHEDULE": "1m,90"},
            "invalid setting WORKER_RETRY_SCHEDULE='1m,90': in the schedule '1m,90': '90' has "
            "no unit: write s, m or h after it, as in 90s",
        ),
        (
            {"WORKER_MAX_RETRY_AGE": "1d"},
            "invalid setting WORKER_MAX_RETRY_AGE='1d': expected a duration such as 30s, 15m or "
            "24h (or plain seconds: 86400), got '1d'",
        ),
        (
            {"WORKER_MAX_RETRY_AGE": "9000h"},
            "invalid setting WORKER_MAX_RETRY_AGE='9000h': expected more than 0 and at most "
            "365 days",
        ),
        (
            {"WORKER_RETRY_SCHEDULE": "5m,1h", "WORKER_MAX_RETRY_AGE": "4m"},
            "invalid setting WORKER_MAX_RETRY_AGE='4m': it is shorter than the first delay of "
            "WORKER_RETRY_SCHEDULE (5m): every deferred email would expire untried; make it "
            "longer, or the first delay shorter",
        ),
        (
            {"EVENTS_TOPIC": "email.send.dlq"},
            "invalid setting EVENTS_TOPIC='email.send.dlq': the events need a topic of their "
            "own, not EMAIL_TOPIC's or DLQ_TOPIC's",
        ),
        (
            {"EVENTS_TOPIC": "email events"},
            "invalid setting EVENTS_TOPIC='email events': expected a Kafka topic name: 1 to 249 "
            "letters, digits, '.', '_' or '-'",
        ),
        (
            {"DLQ_TOPIC": "email.send.retry-1m"},
            "invalid setting WORKER_RETRY_SCHEDULE='1m,5m,15m,30m,60m': its topic "
            "email.send.retry-1m is DLQ_TOPIC or EVENTS_TOPIC: give them other names",
        ),
    ],
)
def test_a_wrong_schedule_age_or_events_topic_stops_the_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], line: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit) as exit_info:
        settings_or_exit(NoEnvFile)

    assert str(exit_info.value) == line


class NoEnvFile(Settings):
    """The settings from the environment alone: never a developer's .env."""

    model_config = SettingsConfigDict(env_file=None)


# The consumer groups of the retry topics and of the events (issue 16).


def test_the_retry_and_status_groups_have_names_of_their_own() -> None:
    settings = Settings(_env_file=None)

    assert settings.retry_consumer_group == "email-retry-group"
    assert settings.status_consumer_group == "email-status-group"


@pytest.mark.parametrize(
    ("variables", "line"),
    [
        (
            {"RETRY_CONSUMER_GROUP": "email-send-group"},
            "invalid setting RETRY_CONSUMER_GROUP='email-send-group': it is CONSUMER_GROUP too: "
            "the two readers would share the group's partitions, each reading part of the "
            "records; give each a group of its own",
        ),
        (
            {"STATUS_CONSUMER_GROUP": "email-retry-group"},
            "invalid setting STATUS_CONSUMER_GROUP='email-retry-group': it is "
            "RETRY_CONSUMER_GROUP too: the two readers would share the group's partitions, each "
            "reading part of the records; give each a group of its own",
        ),
    ],
)
def test_a_group_shared_by_two_readers_stops_the_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], line: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit) as exit_info:
        settings_or_exit(NoEnvFile)

    assert str(exit_info.value) == line


# The sink's reply delay, a relay in another region (issue 17).


@pytest.mark.parametrize(("given", "delay"), [("20", 20), (" 0 ", 0), (60_000, 60_000), ("", 0)])
def test_sink_reply_delay_is_whole_milliseconds(given: object, delay: int) -> None:
    assert Settings(_env_file=None, sink_reply_delay_ms=given).sink_reply_delay_ms == delay


def test_sink_reply_delay_is_zero_by_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).sink_reply_delay_ms == 0
    monkeypatch.setenv("SINK_REPLY_DELAY_MS", "20")
    assert Settings(_env_file=None).sink_reply_delay_ms == 20


@pytest.mark.parametrize("given", ["-5", "20ms", "0.5", "60001", True, "²"])
def test_sink_reply_delay_says_what_it_expects(given: object) -> None:
    with pytest.raises(ValueError, match=r"whole number of milliseconds from 0 \(no delay\) to"):
        Settings(_env_file=None, sink_reply_delay_ms=given)


def test_the_workers_producer_lingers_five_milliseconds_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().worker_producer_linger_ms == 5
    monkeypatch.setenv("WORKER_PRODUCER_LINGER_MS", "0")
    assert Settings().worker_producer_linger_ms == 0


@pytest.mark.parametrize("given", [-1, 1001])
def test_the_workers_producer_linger_has_bounds(given: int) -> None:
    with pytest.raises(ValidationError, match="worker_producer_linger_ms"):
        Settings(worker_producer_linger_ms=given)
