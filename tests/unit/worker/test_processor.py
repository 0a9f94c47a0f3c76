"""What happens to one record, with fake edges: deliver, skip, retry, dead-letter."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass, field

import pytest
from aiosmtplib import SMTPRecipientRefused, SMTPRecipientsRefused, SMTPResponse, SMTPSenderRefused

from services.worker.configuration_faults import ConfigurationFaults
from services.worker.dedupe import DeliveryState, Outcome
from services.worker.mime import OutgoingEmail
from services.worker.processor import AttemptCounts, EmailProcessor
from services.worker.retry import RetryPolicy, Stopped
from services.worker.smtp_failures import ConfigurationFault, OutcomeUnknown
from services.worker.store_outage import StoreOutage
from tests.unit.worker.fakes import (
    FakeDeadLetters,
    FakeMailer,
    InMemoryDedupeStore,
    consumer_record,
    email_record,
    kafka_record,
)

NO_WAIT = RetryPolicy(max_attempts=0, initial_seconds=0.001, max_seconds=0.001)


def processor(
    store: InMemoryDedupeStore | None = None,
    dead_letters: FakeDeadLetters | None = None,
    retry: RetryPolicy = NO_WAIT,
    faults: ConfigurationFaults | None = None,
    counts: AttemptCounts | None = None,
) -> EmailProcessor:
    faults = faults or ConfigurationFaults(retry.initial_seconds, retry.max_seconds)
    return EmailProcessor(
        store=store or InMemoryDedupeStore(),
        dead_letters=dead_letters or FakeDeadLetters(),
        retry=retry,
        message_id_domain="pipeline.test",
        configuration_faults=faults,
        counts=counts or AttemptCounts(),
        store_outage=StoreOutage(),
    )


def refused(code: int, address: str = "ana@example.com") -> SMTPRecipientsRefused:
    return SMTPRecipientsRefused([SMTPRecipientRefused(code, "scripted", address)])


async def test_a_delivered_email_is_recorded_as_finished() -> None:
    store, mailer = InMemoryDedupeStore(), FakeMailer()

    outcome = await processor(store).process(kafka_record(0, "m-1"), mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert store.outcomes == {"m-1": "delivered"}
    [(message, sender, recipients)] = mailer.sent
    assert message["Message-ID"] == "<m-1@pipeline.test>"
    assert (sender, recipients) == ("demo@example.com", ["ana@example.com"])


async def test_a_finished_message_id_is_skipped_not_sent_again() -> None:
    store, mailer = InMemoryDedupeStore(), FakeMailer()
    store.outcomes["m-1"] = "delivered"

    outcome = await processor(store).process(kafka_record(7, "m-1"), mailer, asyncio.Event())

    assert outcome.finished == "duplicate"
    assert mailer.attempts == 0


async def test_transient_failures_are_retried_until_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, mailer = InMemoryDedupeStore(), FakeMailer([refused(451), ConnectionRefusedError(), {}])

    with caplog.at_level(logging.INFO, logger="worker"):
        outcome = await processor(store).process(kafka_record(0, "m-1"), mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert mailer.attempts == 3
    assert len(mailer.sent) == 1
    # The log names the message id, as the API answered it: what a person greps for.
    assert "attempt 2 for m-1 failed" in caplog.text
    assert "delivered m-1 to 1 recipient(s)" in caplog.text


async def test_a_permanent_failure_is_dead_lettered_once_with_its_reason() -> None:
    store, dead_letters = InMemoryDedupeStore(), FakeDeadLetters()
    record = kafka_record(3, "m-1")

    outcome = await processor(store, dead_letters).process(
        record, FakeMailer([refused(550)]), asyncio.Event()
    )

    assert outcome.finished == "dead-lettered"
    assert store.outcomes == {"m-1": "dead-lettered"}
    [(published, error, attempts)] = dead_letters.published
    assert published is record
    assert "550" in error
    assert attempts == 1


async def test_giving_up_after_max_attempts_dead_letters() -> None:
    dead_letters = FakeDeadLetters()
    retry = RetryPolicy(max_attempts=3, initial_seconds=0.001, max_seconds=0.001)
    mailer = FakeMailer([refused(451)] * 5)

    outcome = await processor(dead_letters=dead_letters, retry=retry).process(
        kafka_record(0, "m-1"), mailer, asyncio.Event()
    )

    assert outcome.finished == "dead-lettered"
    assert mailer.attempts == 3
    assert dead_letters.published[0][2] == 3


@pytest.mark.parametrize("value", [b"hello1", b'{"schema_version": 9}', None])
async def test_a_poison_record_is_dead_lettered_without_sending(value: bytes | None) -> None:
    dead_letters, mailer = FakeDeadLetters(), FakeMailer()

    outcome = await processor(dead_letters=dead_letters).process(
        consumer_record(0, value), mailer, asyncio.Event()
    )

    assert outcome.finished == "dead-lettered"
    assert mailer.attempts == 0
    assert dead_letters.published[0][1].startswith("poison record")


async def test_refused_recipients_of_a_delivered_email_are_dead_lettered() -> None:
    dead_letters, store = FakeDeadLetters(), InMemoryDedupeStore()
    mailer = FakeMailer([{"bob@example.com": SMTPResponse(550, "no such user")}])

    outcome = await processor(store, dead_letters).process(
        kafka_record(0, "m-1"), mailer, asyncio.Event()
    )

    assert outcome.finished == "delivered"
    assert store.outcomes == {"m-1": "delivered"}
    assert "bob@example.com (550 no such user)" in dead_letters.published[0][1]


async def test_dead_letters_are_retried_while_kafka_refuses() -> None:
    dead_letters = FakeDeadLetters([ConnectionError("broker down")] * 2)

    await processor(dead_letters=dead_letters).process(
        consumer_record(0, b"junk"), FakeMailer(), asyncio.Event()
    )

    assert len(dead_letters.published) == 1


async def test_stopping_interrupts_the_wait_before_a_retry() -> None:
    slow_retry = RetryPolicy(max_attempts=0, initial_seconds=60, max_seconds=60)
    stopping = asyncio.Event()
    store = InMemoryDedupeStore()
    task = asyncio.create_task(
        processor(store, retry=slow_retry).process(
            kafka_record(0, "m-1"), FakeMailer([refused(451)]), stopping
        )
    )
    await asyncio.sleep(0.05)

    stopping.set()

    with pytest.raises(Stopped):
        await asyncio.wait_for(task, timeout=1)
    assert store.outcomes == {}, "an unfinished record is not recorded, so it is retried later"


async def test_recipients_refused_with_4xx_are_retried_alone() -> None:
    dead_letters = FakeDeadLetters()
    mailer = FakeMailer([{"bob@example.com": SMTPResponse(451, "greylisted")}, {}])
    record = consumer_record(
        0, email_record("m-1", to=["ana@example.com", "bob@example.com"]).to_kafka()[1]
    )

    outcome = await processor(dead_letters=dead_letters).process(record, mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert [recipients for _, _, recipients in mailer.sent] == [
        ["ana@example.com", "bob@example.com"],
        ["bob@example.com"],
    ]
    assert dead_letters.published == []


@dataclass(frozen=True)
class AskedBackOff(RetryPolicy):
    """Waits a millisecond, and keeps the attempt number each wait was asked for."""

    asked: list[int] = field(default_factory=list)

    def delay(self, attempt: int) -> float:
        self.asked.append(attempt)
        return 0.001


class StoreWrites(InMemoryDedupeStore):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, ...]] = []

    async def record_accepted(
        self, message_id: str, recipients: Collection[str], source: str
    ) -> None:
        self.writes.append(("accepted", message_id, *recipients))
        await super().record_accepted(message_id, recipients, source)

    async def record(self, message_id: str, outcome: Outcome, source: str) -> None:
        self.writes.append((outcome, message_id))
        await super().record(message_id, outcome, source)


async def test_a_deferred_recipient_waits_the_back_off_of_every_attempt_so_far(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The connection drops, then the server takes the email for ana and defers bob: ana is
    recorded before bob's round, which waits as after the second attempt; bob's own retries
    count from 1 again."""
    store, counts = StoreWrites(), AttemptCounts()
    retry = AskedBackOff(max_attempts=0, initial_seconds=0.001, max_seconds=0.001)
    mailer = FakeMailer(
        [
            ConnectionRefusedError(),
            {"bob@example.com": SMTPResponse(451, "4.7.1 greylisted")},
            refused(450, "bob@example.com"),
            {},
        ]
    )
    record = consumer_record(
        0, email_record("m-1", to=["ana@example.com", "bob@example.com"]).to_kafka()[1]
    )

    with caplog.at_level(logging.INFO, logger="worker"):
        outcome = await processor(store, retry=retry, counts=counts).process(
            record, mailer, asyncio.Event()
        )

    assert outcome.finished == "delivered"
    assert retry.asked == [1, 2, 1], "after attempt 1; before bob's round; after its attempt 1"
    assert counts.retries == 3
    assert store.writes == [("accepted", "m-1", "ana@example.com"), ("delivered", "m-1")]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
        "email.send-0 offset 0: m-1 taken for 1 recipient(s), deferred for 1 (451 4.7.1 "
        "greylisted); retrying those",
        "email.send-0 offset 0: delivered m-1 to 2 recipient(s)",
    ]


async def test_one_refused_for_good_one_deferred_then_taken_is_recorded_then_dead_lettered() -> (
    None
):
    store, dead_letters = StoreWrites(), FakeDeadLetters()
    mailer = FakeMailer(
        [
            {
                "bob@example.com": SMTPResponse(550, "5.1.1 no such user"),
                "cy@example.com": SMTPResponse(451, "4.7.1 greylisted"),
            },
            {},
        ]
    )
    to = ["ana@example.com", "bob@example.com", "cy@example.com"]
    record = consumer_record(0, email_record("m-1", to=to).to_kafka()[1])

    outcome = await processor(store, dead_letters).process(record, mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert outcome.dead_letter_reason == "some_recipients_refused"
    assert store.writes == [
        ("accepted", "m-1", "ana@example.com"),
        ("accepted", "m-1", "cy@example.com"),
        ("delivered", "m-1"),
    ]
    [(_, reason, attempts)] = dead_letters.published
    assert (reason, attempts) == (
        "delivered, but refused for bob@example.com (550 5.1.1 no such user)",
        2,
    )


async def test_a_record_that_breaks_the_schema_rules_is_poison() -> None:
    dead_letters, mailer = FakeDeadLetters(), FakeMailer()
    forged = email_record("m-1").to_kafka()[1].replace(b'"subject":"m-1"', b'"subject":"a\\u2028b"')

    outcome = await processor(dead_letters=dead_letters).process(
        consumer_record(0, forged), mailer, asyncio.Event()
    )

    assert outcome.finished == "dead-lettered"
    assert mailer.attempts == 0
    assert "line-breaking" in dead_letters.published[0][1]


class FlakyStore(InMemoryDedupeStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def record(self, message_id: str, outcome: Outcome, source: str) -> None:
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        await super().record(message_id, outcome, source)


async def test_a_failing_dedupe_write_is_retried_not_a_crash() -> None:
    store, mailer = FlakyStore(failures=2), FakeMailer()

    outcome = await processor(store).process(kafka_record(0, "m-1"), mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert store.outcomes == {"m-1": "delivered"}
    assert mailer.attempts == 1


REFUSED_LOGIN = ConfigurationFault(
    "authentication",
    "SMTP authentication refused by relay.example.com:587 (535 5.7.8 Authentication credentials "
    "invalid); check SMTP_USERNAME/SMTP_PASSWORD",
)


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(REFUSED_LOGIN, id="login_refused"),
        pytest.param(
            SMTPSenderRefused(530, "5.7.0 Authentication required", "demo@example.com"),
            id="530_at_mail",
        ),
    ],
)
async def test_a_configuration_fault_holds_the_email_whatever_the_attempts_limit(
    refusal: Exception,
) -> None:
    store, dead_letters = InMemoryDedupeStore(), FakeDeadLetters()
    retry = RetryPolicy(max_attempts=2, initial_seconds=0.001, max_seconds=0.001)
    faults = ConfigurationFaults(0.001, 0.001)
    mailer = FakeMailer([refusal] * 5 + [{}])

    outcome = await processor(store, dead_letters, retry, faults).process(
        kafka_record(0, "m-1"), mailer, asyncio.Event()
    )

    assert outcome.finished == "delivered"
    assert mailer.attempts == 6, "five refusals did not count against WORKER_MAX_ATTEMPTS=2"
    assert dead_letters.published == []
    assert store.outcomes == {"m-1": "delivered"}
    assert faults.current is None, "a delivery shows the server accepts again"


async def test_a_held_email_is_neither_recorded_nor_dead_lettered_when_stopped() -> None:
    store, dead_letters = InMemoryDedupeStore(), FakeDeadLetters()
    faults = ConfigurationFaults(60, 60)
    stopping = asyncio.Event()
    task = asyncio.create_task(
        processor(store, dead_letters, faults=faults).process(
            kafka_record(0, "m-1"), FakeMailer([REFUSED_LOGIN]), stopping
        )
    )
    await asyncio.sleep(0.05)
    assert faults.current is not None

    stopping.set()

    with pytest.raises(Stopped):
        await asyncio.wait_for(task, timeout=1)
    assert store.outcomes == {}
    assert dead_letters.published == []


class RefusingRelay(FakeMailer):
    """Refuses the worker's credentials until `accepting`: every lane shares it, as a relay."""

    def __init__(self) -> None:
        super().__init__()
        self.accepting = False
        self.refused = 0

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> dict[str, SMTPResponse]:
        if not self.accepting:
            self.refused += 1
            raise REFUSED_LOGIN
        return await super().send(email, recipients)


async def test_while_refused_one_lane_tries_and_every_lane_resumes_once_accepted() -> None:
    relay, faults = RefusingRelay(), ConfigurationFaults(0.02, 0.02)
    email_processor = processor(faults=faults)
    lanes = [
        asyncio.create_task(
            email_processor.process(kafka_record(n, f"m-{n}"), relay, asyncio.Event())
        )
        for n in range(8)
    ]
    await asyncio.sleep(0.2)
    refused_while_held = relay.refused

    relay.accepting = True
    outcomes = await asyncio.wait_for(asyncio.gather(*lanes), timeout=1)

    # Each of the 8 lanes on its own would have tried about 80 times in 0.2 s.
    assert 1 <= refused_while_held <= 8 + 12, f"{refused_while_held} tries"
    assert [outcome.finished for outcome in outcomes] == ["delivered"] * 8
    assert len(relay.sent) == 8


async def test_a_deferred_recipient_is_owed_the_email_after_a_stop_and_nobody_else_is() -> None:
    """Greylisting: the server takes the email for ana and defers bob (451). The worker stops
    while it waits to retry bob; the next owner of the record sends it to bob alone."""
    store = InMemoryDedupeStore()
    slow_retry = RetryPolicy(max_attempts=0, initial_seconds=60, max_seconds=60)
    record = consumer_record(
        0, email_record("m-1", to=["ana@example.com", "bob@example.com"]).to_kafka()[1]
    )
    first_owner = FakeMailer([{"bob@example.com": SMTPResponse(451, "4.7.1 greylisted")}])
    stopping = asyncio.Event()
    task = asyncio.create_task(
        processor(store, retry=slow_retry).process(record, first_owner, stopping)
    )
    await asyncio.sleep(0.05)
    stopping.set()
    with pytest.raises(Stopped):
        await asyncio.wait_for(task, timeout=1)
    next_owner = FakeMailer()

    outcome = await processor(store).process(record, next_owner, asyncio.Event())

    assert outcome.finished == "delivered"
    assert [recipients for _, _, recipients in first_owner.sent] == [
        ["ana@example.com", "bob@example.com"]
    ]
    assert [recipients for _, _, recipients in next_owner.sent] == [["bob@example.com"]]
    assert store.outcomes == {"m-1": "delivered"}


async def test_recipients_taken_before_are_not_dead_lettered_with_the_ones_refused_later() -> None:
    store, dead_letters = InMemoryDedupeStore(), FakeDeadLetters()
    store.accepted["m-1"] = {"ana@example.com"}
    record = consumer_record(
        0, email_record("m-1", to=["ana@example.com", "bob@example.com"]).to_kafka()[1]
    )

    outcome = await processor(store, dead_letters).process(
        record, FakeMailer([refused(550, "bob@example.com")]), asyncio.Event()
    )

    assert outcome.finished == "delivered", "ana has it: the email was delivered, bob refused"
    [(_, reason, _)] = dead_letters.published
    assert reason.startswith("delivered, but refused for bob@example.com")
    assert "ana@example.com" not in reason
    assert store.outcomes == {"m-1": "delivered"}


async def test_an_unknown_outcome_is_counted_and_sent_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost_reply = OutcomeUnknown("the connection was lost after the end of DATA")
    mailer, counts = FakeMailer([lost_reply, {}]), AttemptCounts()

    with caplog.at_level(logging.WARNING, logger="worker"):
        outcome = await processor(counts=counts).process(
            kafka_record(0, "m-1"), mailer, asyncio.Event()
        )

    assert outcome.finished == "delivered"
    assert mailer.attempts == 2
    assert counts == AttemptCounts(retries=1, outcome_unknown=1)
    assert "outcome unknown" in caplog.text
    assert "may get it twice" in caplog.text


async def test_no_log_line_names_a_bcc_recipient(caplog: pytest.LogCaptureFixture) -> None:
    record = consumer_record(
        0,
        email_record(
            "m-1", to=["ana@example.com"], bcc=["secret@example.com", "hidden@example.com"]
        ).to_kafka()[1],
    )
    mailer = FakeMailer(
        [
            {"hidden@example.com": SMTPResponse(451, "later")},
            {"hidden@example.com": SMTPResponse(550, "no")},
        ]
    )

    with caplog.at_level(logging.DEBUG):
        await processor().process(record, mailer, asyncio.Event())

    assert "secret@example.com" not in caplog.text
    assert "hidden@example.com" not in caplog.text


class UnreachableStore(InMemoryDedupeStore):
    """A shared store (PostgreSQL) that is away for the first reads."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def state_of(self, message_id: str) -> DeliveryState | None:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("the dedupe store is restarting")
        return await super().state_of(message_id)


async def test_a_failing_dedupe_read_is_retried_not_a_crash() -> None:
    store, mailer = UnreachableStore(failures=2), FakeMailer()

    outcome = await processor(store).process(kafka_record(0, "m-1"), mailer, asyncio.Event())

    assert outcome.finished == "delivered"
    assert mailer.attempts == 1


async def test_the_store_outage_is_known_while_it_lasts_and_cleared_after() -> None:
    store, outage = UnreachableStore(failures=1_000_000), StoreOutage()
    email_processor = EmailProcessor(
        store=store,
        dead_letters=FakeDeadLetters(),
        retry=NO_WAIT,
        message_id_domain="pipeline.test",
        configuration_faults=ConfigurationFaults(0.001, 0.001),
        counts=AttemptCounts(),
        store_outage=outage,
    )
    task = asyncio.create_task(
        email_processor.process(kafka_record(0, "m-1"), FakeMailer(), asyncio.Event())
    )
    await asyncio.sleep(0.05)
    reason_while_away = outage.reason
    store.failures = 0

    assert (await asyncio.wait_for(task, timeout=1)).finished == "delivered"
    assert reason_while_away is not None
    assert "restarting" in reason_while_away
    assert outage.reason is None
