"""The worker's SMTP edge against a real Mailpit started by the test: in the clear, over STARTTLS
with AUTH, over TLS; what the server refuses of the worker's settings is a configuration fault
that holds the emails, and they arrive once, and only once, when the server accepts again."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from aiosmtplib import SMTPSenderRefused
from pydantic import SecretStr

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.health import create_health_app
from services.worker.mime import OutgoingEmail, render_email
from services.worker.processor import AttemptCounts
from services.worker.retry import RetryPolicy
from services.worker.smtp import SmtpConnection, SmtpServer, TlsMode, tls_context
from services.worker.smtp_failures import ConfigurationFault, classify
from services.worker.store_outage import StoreOutage
from tests.mailpit import (
    Certificate,
    RunningMailpit,
    auth_flags,
    implicit_tls_flags,
    running_mailpit,
    starttls_flags,
)
from tests.unit.worker.fakes import (
    FakeDeadLetters,
    FakeOwnedPartitions,
    FakeProducer,
    InMemoryDedupeStore,
    email_processor,
    email_record,
    kafka_record,
    member_of_the_group,
)

DOMAIN = "pipeline.test"
USERNAME, PASSWORD = "worker", "Tr0ub4dor&3-not-in-any-log"


def smtp_server(
    mailpit: RunningMailpit,
    tls: TlsMode = "none",
    ca: Certificate | None = None,
    username: str | None = None,
    password: str | None = None,
    allow_plaintext_auth: bool = False,
) -> SmtpServer:
    return SmtpServer(
        "127.0.0.1",
        mailpit.smtp_port,
        timeout_seconds=5,
        tls=tls,
        tls_context=None if tls == "none" else tls_context(ca.ca_file if ca else None),
        username=username,
        password=SecretStr(password) if password is not None else None,
        allow_plaintext_auth=allow_plaintext_auth,
    )


def email(message_id: str) -> OutgoingEmail:
    return render_email(email_record(message_id), DOMAIN)


async def send(server: SmtpServer, *message_ids: str) -> None:
    connection = SmtpConnection(server)
    try:
        for message_id in message_ids:
            outgoing = email(message_id)
            assert (await connection.send(outgoing, outgoing.recipients)).refused == {}
    finally:
        await connection.close()


async def refusal(server: SmtpServer) -> ConfigurationFault:
    """The configuration fault one send meets."""
    with pytest.raises(ConfigurationFault) as refused:
        await send(server, "refused")
    return refused.value


async def test_plain_delivery_reaches_mailpit(mailpit: Path, tmp_path: Path) -> None:
    with running_mailpit(mailpit, tmp_path) as server:
        await send(smtp_server(server), "plain-1", "plain-2")

        assert server.copies_of(f"plain-1@{DOMAIN}") == 1
        assert server.copies_of(f"plain-2@{DOMAIN}") == 1
        assert server.total() == 2


async def test_starttls_and_auth_deliver_over_a_verified_certificate(
    mailpit: Path, tmp_path: Path, certificate: Certificate
) -> None:
    flags = [*starttls_flags(certificate), *auth_flags(tmp_path / "auth", USERNAME, PASSWORD)]
    with running_mailpit(mailpit, tmp_path, *flags) as server:
        await send(
            smtp_server(server, "starttls", certificate, USERNAME, PASSWORD), "secure-1", "secure-2"
        )

        assert server.copies_of(f"secure-1@{DOMAIN}") == 1
        assert server.copies_of(f"secure-2@{DOMAIN}") == 1


async def test_implicit_tls_delivers(
    mailpit: Path, tmp_path: Path, certificate: Certificate
) -> None:
    flags = [*implicit_tls_flags(certificate), *auth_flags(tmp_path / "auth", USERNAME, PASSWORD)]
    with running_mailpit(mailpit, tmp_path, *flags) as server:
        await send(smtp_server(server, "tls", certificate, USERNAME, PASSWORD), "implicit-1")

        assert server.copies_of(f"implicit-1@{DOMAIN}") == 1


async def test_a_certificate_of_an_unknown_ca_is_a_configuration_fault(
    mailpit: Path, tmp_path: Path, certificate: Certificate
) -> None:
    with running_mailpit(mailpit, tmp_path, *starttls_flags(certificate)) as server:
        fault = await refusal(smtp_server(server, "starttls", ca=None))

        assert fault.kind == "tls"
        assert str(fault) == (
            f"the TLS certificate of 127.0.0.1:{server.smtp_port} is not trusted (unable to get "
            "local issuer certificate); check SMTP_CA_FILE (a CA to trust besides the system's) "
            "and SMTP_HOST (the name the certificate is for)"
        )
        assert server.total() == 0


async def test_implicit_tls_toward_a_plaintext_port_is_a_configuration_fault(
    mailpit: Path, tmp_path: Path, certificate: Certificate
) -> None:
    with running_mailpit(mailpit, tmp_path) as server:
        fault = await refusal(smtp_server(server, "tls", certificate))

        assert fault.kind == "tls"
        assert "check SMTP_TLS" in str(fault)


async def test_starttls_never_falls_back_to_plaintext(mailpit: Path, tmp_path: Path) -> None:
    with running_mailpit(mailpit, tmp_path) as server:  # offers no STARTTLS
        fault = await refusal(smtp_server(server, "starttls"))

        assert fault.kind == "starttls_not_offered"
        assert f"127.0.0.1:{server.smtp_port} does not offer STARTTLS" in str(fault)
        assert server.total() == 0


async def test_a_wrong_password_is_a_configuration_fault_that_never_shows_the_password(
    mailpit: Path, tmp_path: Path, certificate: Certificate
) -> None:
    flags = [*starttls_flags(certificate), *auth_flags(tmp_path / "auth", USERNAME, "another")]
    with running_mailpit(mailpit, tmp_path, *flags) as server:
        fault = await refusal(smtp_server(server, "starttls", certificate, USERNAME, PASSWORD))

        assert fault.kind == "authentication"
        assert str(fault) == (
            f"SMTP authentication refused by 127.0.0.1:{server.smtp_port} (535 5.7.8 "
            "Authentication credentials invalid); check SMTP_USERNAME/SMTP_PASSWORD"
        )
        assert PASSWORD not in repr(fault)
        assert server.total() == 0


async def test_no_credentials_where_the_server_wants_them_is_a_configuration_fault(
    mailpit: Path, tmp_path: Path, certificate: Certificate
) -> None:
    flags = [*starttls_flags(certificate), *auth_flags(tmp_path / "auth", USERNAME, PASSWORD)]
    with running_mailpit(mailpit, tmp_path, *flags) as server:
        with pytest.raises(SMTPSenderRefused) as refused:
            await send(smtp_server(server, "starttls", certificate), "anonymous")

        failure = classify(refused.value)
        assert failure.fault == "authentication_required"
        assert failure.reason == (
            "the SMTP server wants authentication or TLS (530 5.7.0 Authentication required); "
            "check SMTP_TLS, SMTP_USERNAME and SMTP_PASSWORD"
        )
        assert not failure.permanent
        assert server.total() == 0


async def test_credentials_for_a_server_without_auth_are_a_configuration_fault(
    mailpit: Path, tmp_path: Path
) -> None:
    with running_mailpit(mailpit, tmp_path) as server:
        fault = await refusal(
            smtp_server(server, "none", None, USERNAME, PASSWORD, allow_plaintext_auth=True)
        )

        assert fault.kind == "auth_not_offered"
        assert server.total() == 0


async def test_held_emails_arrive_once_when_the_server_accepts_the_password(
    mailpit: Path, tmp_path: Path, certificate: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight lanes meet a wrong password (the server does not know it yet); nothing is
    sent, recorded, published or dead-lettered; the server learns it and every email arrives
    once."""
    store, producer, dead_letters = InMemoryDedupeStore(), FakeProducer(), FakeDeadLetters()
    faults = ConfigurationFaults(0.05, 0.2)
    processor = email_processor(
        store,
        producer=producer,
        dead_letters=dead_letters,
        retry=RetryPolicy(0.05, 0.2),
        faults=faults,
    )
    message_ids = [f"held-{n}" for n in range(8)]
    flags = starttls_flags(certificate)
    with running_mailpit(
        mailpit, tmp_path, *flags, *auth_flags(tmp_path / "auth", USERNAME, "not-yet")
    ) as before:
        server = smtp_server(before, "starttls", certificate, USERNAME, PASSWORD)
        lanes = [SmtpConnection(server) for _ in message_ids]  # a lane, an email at a time
        stopping = asyncio.Event()
        with caplog.at_level(logging.DEBUG):
            held = [
                asyncio.create_task(
                    processor.process(kafka_record(n, message_id), lanes[n], stopping)
                )
                for n, message_id in enumerate(message_ids)
            ]
            await asyncio.sleep(1.5)
            readyz, metrics_text = await health(faults)
        ports = {"smtp_port": before.smtp_port, "http_port": before.http_port}

        assert not any(task.done() for task in held)
        assert readyz.status_code == 503
        assert readyz.json()["status"] == (
            f"not ready: SMTP authentication refused by 127.0.0.1:{before.smtp_port} (535 5.7.8 "
            "Authentication credentials invalid); check SMTP_USERNAME/SMTP_PASSWORD"
        )
        assert 'email_worker_configuration_faults_total{kind="authentication"}' in metrics_text
        assert before.total() == 0
        assert (store.rows, producer.sent, dead_letters.published) == ({}, [], [])

    flags = [*flags, *auth_flags(tmp_path / "auth", USERNAME, PASSWORD)]
    with running_mailpit(mailpit, tmp_path, *flags, **ports) as after:
        outcomes = await asyncio.wait_for(asyncio.gather(*held), timeout=10)
        for lane in lanes:
            await lane.close()

        assert [outcome.finished for outcome in outcomes] == ["delivered"] * len(message_ids)
        assert [after.copies_of(f"{m}@{DOMAIN}") for m in message_ids] == [1] * len(message_ids)
        assert after.total() == len(message_ids)
    assert (await health(faults))[0].status_code == 200
    assert dead_letters.published == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "worker"]
    assert len(errors) == 1, "said once, not by each lane at each try"
    for shown in (caplog.text, readyz.text, metrics_text, repr(server), repr(lanes[0])):
        assert PASSWORD not in shown


async def health(faults: ConfigurationFaults) -> tuple[httpx.Response, str]:
    """The worker's /readyz answer and its /metrics text."""
    app = create_health_app(
        member_of_the_group(),
        FakeOwnedPartitions(),
        "email-send-group",
        faults,
        AttemptCounts(),
        StoreOutage(),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as c:
        return await c.get("/readyz"), (await c.get("/metrics")).text
