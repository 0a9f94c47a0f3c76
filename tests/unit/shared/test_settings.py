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
