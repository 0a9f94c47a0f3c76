"""Settings: the seed's names by default, environment overrides, and one clear line when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import PROJECT_ROOT, Settings, load_settings


def test_defaults_are_the_seeds_names() -> None:
    settings = Settings(_env_file=None)

    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.email_topic == "email.send"
    assert settings.dlq_topic == "email.send.dlq"
    assert settings.consumer_group == "email-send-group"
    assert settings.topic_partitions == 3


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:29092,kafka-2:29092")
    monkeypatch.setenv("TOPIC_PARTITIONS", "6")

    settings = Settings(_env_file=None)

    assert settings.topic_partitions == 6
    assert settings.kafka_listener == ("kafka", 29092)


def test_relative_paths_are_relative_to_the_project() -> None:
    settings = Settings(_env_file=None, run_dir=Path("run"), kafka_libs_dir=Path("/opt/kafka"))

    assert settings.run_dir == PROJECT_ROOT / "run"
    assert settings.kafka_libs_dir == Path("/opt/kafka")


@pytest.mark.parametrize("servers", ["localhost", "localhost:", ":9092", "localhost:99999"])
def test_bootstrap_servers_must_be_host_and_port(servers: str) -> None:
    with pytest.raises(ValueError, match="expected host:port"):
        Settings(_env_file=None, kafka_bootstrap_servers=servers)


def test_invalid_values_exit_with_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPIC_PARTITIONS", "0")
    monkeypatch.setenv("KAFKA_CONTROLLER_PORT", "http")

    with pytest.raises(SystemExit) as exit_info:
        load_settings()

    assert str(exit_info.value).splitlines() == [
        "invalid setting TOPIC_PARTITIONS='0': Input should be greater than or equal to 1",
        "invalid setting KAFKA_CONTROLLER_PORT='http': "
        "Input should be a valid integer, unable to parse string as an integer",
    ]
