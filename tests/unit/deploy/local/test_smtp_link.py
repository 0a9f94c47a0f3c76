"""Which environment `make up` gives the sink and the worker, from the settings alone: plain
SMTP as before, STARTTLS or implicit TLS with the local CA, AUTH as the worker's user; the user's
own settings win, and a worker that delivers to a relay leaves the sink alone."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from deploy.local.errors import StackError
from deploy.local.settings import LocalSettings
from deploy.local.smtp_link import delivers_to_sink, describe, plan_smtp_link, prepare
from deploy.local.stack import LocalStack

RUN = Path("/stack/run")
TLS = RUN / "tls"


def settings(**fields: Any) -> LocalSettings:
    """Settings as the environment gives them: only these fields count as set by the user."""
    return LocalSettings.model_validate({"run_dir": RUN, **fields})


def test_plain_smtp_by_default_changes_nothing() -> None:
    link = plan_smtp_link(settings())

    assert (link.tls, dict(link.sink_env), dict(link.worker_env)) == ("none", {}, {})
    assert link.local_tls is None
    assert link.auth_file is None
    assert describe(link) == []


def test_starttls_gives_the_sink_a_local_certificate_and_the_worker_its_ca() -> None:
    link = plan_smtp_link(settings(smtp_tls="starttls"))

    assert link.sink_env == {
        "SINK_TLS_CERT_FILE": f"{TLS}/sink.pem",
        "SINK_TLS_KEY_FILE": f"{TLS}/sink-key.pem",
        "SINK_REQUIRE_STARTTLS": "true",
    }
    assert link.worker_env == {"SMTP_CA_FILE": f"{TLS}/ca.pem"}
    assert link.host_names == ("localhost", "127.0.0.1")


def test_starttls_and_the_workers_credentials_make_the_sink_require_that_user() -> None:
    link = plan_smtp_link(
        settings(smtp_tls="starttls", smtp_username="pipeline", smtp_password="s3cret")
    )

    assert link.sink_env["SINK_AUTH_FILE"] == f"{RUN}/sink/auth"
    assert "SMTP_PASSWORD" not in link.worker_env, "the worker reads its own settings"
    assert "s3cret" not in repr(link), "the plan can be printed"
    assert describe(link) == [
        "The sink speaks STARTTLS, and the worker starts TLS before anything else.",
        f"Its certificate ({TLS}/sink.pem, for localhost, 127.0.0.1) is from the local CA "
        f"{TLS}/ca.pem, which the worker trusts.",
        f"The sink requires AUTH as pipeline ({RUN}/sink/auth).",
    ]


def test_implicit_tls_makes_the_sink_speak_tls_from_the_first_byte() -> None:
    link = plan_smtp_link(settings(smtp_tls="tls"))

    assert link.sink_env == {
        "SINK_TLS_CERT_FILE": f"{TLS}/sink.pem",
        "SINK_TLS_KEY_FILE": f"{TLS}/sink-key.pem",
        "SINK_TLS_IMPLICIT": "true",
    }
    assert link.worker_env == {"SMTP_CA_FILE": f"{TLS}/ca.pem"}


def test_credentials_without_tls_still_make_the_sink_require_them() -> None:
    """The worker then refuses to send them in the clear unless SMTP_ALLOW_PLAINTEXT_AUTH."""
    link = plan_smtp_link(settings(smtp_username="pipeline", smtp_password="s3cret"))

    assert link.sink_env == {"SINK_AUTH_FILE": f"{RUN}/sink/auth"}
    assert link.worker_env == {}


def test_the_users_own_certificate_ca_and_auth_file_win() -> None:
    link = plan_smtp_link(
        settings(
            smtp_tls="starttls",
            smtp_username="pipeline",
            smtp_password="s3cret",
            sink_tls_cert_file="/mine/sink.pem",
            sink_tls_key_file="/mine/sink-key.pem",
            sink_require_starttls=False,
            sink_auth_file="/mine/auth",
        )
    )

    assert (dict(link.sink_env), dict(link.worker_env)) == ({}, {})
    assert link.local_tls is None


def test_the_users_own_ca_for_the_worker_wins() -> None:
    link = plan_smtp_link(settings(smtp_tls="starttls", smtp_ca_file="/mine/ca.pem"))

    assert "SINK_TLS_CERT_FILE" in link.sink_env
    assert link.worker_env == {}


@pytest.mark.parametrize(
    ("fields", "to_sink"),
    [
        ({}, True),
        ({"smtp_host": "127.0.0.1"}, True),
        ({"smtp_host": "localhost", "sink_host": "0.0.0.0"}, True),
        ({"smtp_host": "sink.internal", "sink_host": "sink.internal"}, True),
        ({"smtp_host": "smtp.example.com"}, False),
        ({"smtp_port": 587}, False),
    ],
)
def test_the_worker_delivers_to_the_sink_when_host_and_port_are_the_sinks(
    fields: dict[str, Any], to_sink: bool
) -> None:
    assert delivers_to_sink(settings(**fields)) is to_sink


def test_tls_toward_a_relay_leaves_the_sink_as_it_is() -> None:
    link = plan_smtp_link(
        settings(
            smtp_tls="starttls",
            smtp_host="smtp.example.com",
            smtp_port=587,
            smtp_username="pipeline",
            smtp_password="s3cret",
        )
    )

    assert (dict(link.sink_env), dict(link.worker_env), describe(link)) == ({}, {}, [])


def test_the_certificate_names_the_sinks_and_the_workers_host() -> None:
    link = plan_smtp_link(
        settings(smtp_tls="starttls", sink_host="sink.internal", smtp_host="sink.internal")
    )

    assert link.host_names == ("localhost", "127.0.0.1", "sink.internal")


def test_the_stack_starts_the_sink_and_every_worker_with_that_environment() -> None:
    stack = LocalStack(settings(smtp_tls="starttls", worker_port=9100))

    assert stack.sink().env["SINK_REQUIRE_STARTTLS"] == "true"
    assert stack.worker(2).env == {"WORKER_PORT": "9101", "SMTP_CA_FILE": f"{TLS}/ca.pem"}
    assert stack.api().env == {}


def test_prepare_writes_the_auth_file_for_the_owner_only_and_the_certificate(
    tmp_path: Path,
) -> None:
    link = plan_smtp_link(
        LocalSettings.model_validate(
            {
                "run_dir": tmp_path,
                "smtp_tls": "starttls",
                "smtp_username": "pipeline",
                "smtp_password": "s3cret:x",
            }
        )
    )

    notes = prepare(link)
    again = prepare(link)

    auth_file = tmp_path / "sink" / "auth"
    assert auth_file.read_text() == "pipeline:s3cret:x\n"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert (tmp_path / "tls" / "sink.pem").exists()
    assert [note.split(":")[0] for note in notes] == [
        "Created a local CA for the sink's certificates",
        "Issued the sink's certificate for localhost, 127.0.0.1",
    ]
    assert again == [], "the second start reuses them and says nothing"


@pytest.mark.parametrize(
    ("username", "password", "phrase"),
    [
        ("pipe:line", "s3cret", "SMTP_USERNAME='pipe:line' cannot be a line"),
        (" pipeline", "s3cret", "SMTP_USERNAME=' pipeline' cannot be a line"),
        ("pipeline", "two\nlines", "SMTP_PASSWORD cannot be a line"),
    ],
)
def test_credentials_the_auth_file_cannot_hold_are_explained(
    tmp_path: Path, username: str, password: str, phrase: str
) -> None:
    link = plan_smtp_link(
        LocalSettings.model_validate(
            {"run_dir": tmp_path, "smtp_username": username, "smtp_password": password}
        )
    )

    with pytest.raises(StackError) as error:
        prepare(link)

    assert phrase in str(error.value)
    assert password not in str(error.value)
    assert not (tmp_path / "sink" / "auth").exists()
