"""LocalSettings: the services' settings and the local stack's own, read together from the
environment; relative paths, the local broker's listener, and one clear line when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.local.settings import LocalSettings, load_local_settings
from shared.settings import PROJECT_ROOT


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:29092,kafka-2:29092")
    monkeypatch.setenv("TOPIC_PARTITIONS", "6")

    settings = LocalSettings(_env_file=None)

    assert settings.topic_partitions == 6
    assert settings.kafka_listener == ("kafka", 29092)


def test_relative_paths_are_relative_to_the_project() -> None:
    settings = LocalSettings(_env_file=None, run_dir=Path("run"), kafka_libs_dir=Path("/opt/kafka"))

    assert settings.run_dir == PROJECT_ROOT / "run"
    assert settings.kafka_libs_dir == Path("/opt/kafka")


def test_invalid_values_exit_with_one_line_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPIC_PARTITIONS", "0")
    monkeypatch.setenv("KAFKA_CONTROLLER_PORT", "http")

    with pytest.raises(SystemExit) as exit_info:
        load_local_settings()

    assert str(exit_info.value).splitlines() == [
        "invalid setting TOPIC_PARTITIONS='0': Input should be greater than or equal to 1",
        "invalid setting KAFKA_CONTROLLER_PORT='http': "
        "Input should be a valid integer, unable to parse string as an integer",
    ]
