"""The retry schedule: read from a setting with a clear error when wrong, one topic per delay
with the last reused, the next try or expiry at the age limit; and the retry record, pinned
byte for byte with the email.send record embedded unchanged."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.events import Position, Reply
from shared.retry_topics import (
    DEFAULT_RETRY_SCHEDULE,
    Expired,
    Retry,
    RetryRecord,
    RetrySchedule,
    due_at_header,
    next_step,
    parse_duration,
    parse_retry_record,
    parse_schedule,
    retry_topic_retention,
    retry_topics,
    step_for,
)
from shared.schema import EmailRecord, PoisonRecord
from tests.unit.email_inputs import email_records
from tests.unit.shared.test_schema import EXAMPLE_BYTES, EXAMPLE_RECORD

PROPERTIES = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SCHEDULE = parse_schedule(DEFAULT_RETRY_SCHEDULE)
DAY = timedelta(hours=24)
ACCEPTED_AT = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        (" 2H ", timedelta(hours=2)),
        ("86400", timedelta(days=1)),  # plain seconds
        ("1", timedelta(seconds=1)),
    ],
)
def test_a_duration_is_a_whole_number_of_seconds_minutes_or_hours(
    text: str, duration: timedelta
) -> None:
    assert parse_duration(text) == duration


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected a duration such as 30s, 15m or 24h .or plain seconds: 86400., got ''"),
        ("1d", "got '1d'"),
        ("1.5h", "got '1.5h'"),
        ("-1m", "got '-1m'"),
        ("m", "got 'm'"),
        ("1 m", "got '1 m'"),
        ("0s", "'0s' is no time at all: it must be more than 0"),
        ("0", "'0' is no time at all"),
        ("1234567890h", "got '1234567890h'"),  # past what a date can hold
    ],
)
def test_a_duration_that_is_not_one_says_what_is_expected(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


def test_a_schedules_delays_need_a_unit() -> None:
    """A step's label names its topic: `90` would be email.send.retry-90, of what unit?"""
    with pytest.raises(ValueError, match="'90' has no unit: write s, m or h after it, as in 90s"):
        parse_duration("90", plain_seconds=False)


def test_the_default_schedule_is_an_mtas() -> None:
    assert [(step.label, step.delay) for step in SCHEDULE] == [
        ("1m", timedelta(minutes=1)),
        ("5m", timedelta(minutes=5)),
        ("15m", timedelta(minutes=15)),
        ("30m", timedelta(minutes=30)),
        ("60m", timedelta(minutes=60)),
    ]


def test_a_schedules_labels_are_as_written_in_lower_case() -> None:
    assert [(step.label, step.delay) for step in parse_schedule(" 2s, 5S ,90s")] == [
        ("2s", timedelta(seconds=2)),
        ("5s", timedelta(seconds=5)),
        ("90s", timedelta(seconds=90)),
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected delays separated by commas, each a number and s, m or h"),
        ("  ", "expected delays separated by commas"),
        ("1m,,5m", "expected delays separated by commas.*got '1m,,5m'"),
        ("1m,", "expected delays separated by commas"),
        ("1m;5m", "in the schedule '1m;5m': expected a duration .*, got '1m;5m'"),
        ("1m,90", "in the schedule '1m,90': '90' has no unit"),
        ("1m,0s", "'0s' is no time at all"),
    ],
)
def test_a_schedule_that_is_not_one_says_what_is_expected(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_schedule(text)


def test_each_step_has_a_topic_named_after_email_send() -> None:
    assert retry_topics("email.send", SCHEDULE) == [
        "email.send.retry-1m",
        "email.send.retry-5m",
        "email.send.retry-15m",
        "email.send.retry-30m",
        "email.send.retry-60m",
    ]


def test_a_delay_repeated_in_the_schedule_has_one_topic() -> None:
    assert retry_topics("mail", parse_schedule("1m,1m,5m,1m")) == ["mail.retry-1m", "mail.retry-5m"]


@pytest.mark.parametrize(
    ("attempt", "label"),
    [(1, "1m"), (2, "5m"), (3, "15m"), (4, "30m"), (5, "60m"), (6, "60m"), (100, "60m")],
)
def test_retry_n_waits_the_nth_delay_or_the_last(attempt: int, label: str) -> None:
    assert step_for(attempt, SCHEDULE).label == label


def test_retries_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="retries are counted from 1, got 0"):
        step_for(0, SCHEDULE)


def after(**delta: float) -> datetime:
    return ACCEPTED_AT + timedelta(**delta)


@pytest.mark.parametrize(
    ("attempt", "now", "expected"),
    [
        (0, after(seconds=1), Retry(1, "email.send.retry-1m", after(minutes=1, seconds=1))),
        (1, after(minutes=2), Retry(2, "email.send.retry-5m", after(minutes=7))),
        (3, after(minutes=30), Retry(4, "email.send.retry-30m", after(minutes=60))),
        (4, after(hours=1), Retry(5, "email.send.retry-60m", after(hours=2))),
        (29, after(hours=20), Retry(30, "email.send.retry-60m", after(hours=21))),
        # The last try may fall due exactly at the age limit, not a moment past it.
        (9, after(hours=23), Retry(10, "email.send.retry-60m", after(hours=24))),
        (9, after(hours=23, microseconds=1), Expired(after(hours=24))),
        (0, after(hours=23, minutes=59, seconds=1), Expired(after(hours=24))),
        (0, after(hours=30), Expired(after(hours=24))),
    ],
)  # fmt: skip
def test_a_deferral_is_tried_again_until_the_next_try_would_pass_the_age_limit(
    attempt: int, now: datetime, expected: Retry | Expired
) -> None:
    assert next_step(attempt, ACCEPTED_AT, now, SCHEDULE, DAY, email_topic="email.send") == expected


def test_times_without_a_zone_are_utc() -> None:
    accepted_at = ACCEPTED_AT.replace(tzinfo=None)
    now = after(minutes=10).astimezone(timezone(timedelta(hours=-5)))

    step = next_step(0, accepted_at, now, SCHEDULE, DAY, email_topic="email.send")

    assert step == Retry(1, "email.send.retry-1m", after(minutes=11))
    assert isinstance(step, Retry)
    assert step.due_at.tzinfo == UTC


def test_attempts_are_counted_from_the_main_topics_zero() -> None:
    with pytest.raises(ValueError, match="attempts are counted from 0"):
        next_step(-1, ACCEPTED_AT, ACCEPTED_AT, SCHEDULE, DAY, email_topic="email.send")


def tries_until_expiry(schedule: RetrySchedule, max_age: timedelta) -> list[timedelta]:
    """When an email deferred at every try is tried again, each try taking no time."""
    tries: list[timedelta] = []
    now, attempt = ACCEPTED_AT, 0
    while isinstance(
        step := next_step(attempt, ACCEPTED_AT, now, schedule, max_age, email_topic="email.send"),
        Retry,
    ):
        tries.append(step.due_at - ACCEPTED_AT)
        now, attempt = step.due_at, step.attempt
    return tries


def test_the_default_schedule_tries_27_times_in_a_day() -> None:
    """1, 6, 21 and 51 minutes after acceptance, then hourly until 23 h 51 min."""
    tries = tries_until_expiry(SCHEDULE, DAY)

    assert [int(t / timedelta(minutes=1)) for t in tries[:5]] == [1, 6, 21, 51, 111]
    assert len(tries) == 27
    assert tries[-1] == timedelta(hours=23, minutes=51)


@pytest.mark.parametrize(
    ("max_age", "retention"),
    [
        (timedelta(seconds=40), timedelta(days=7)),
        (DAY, timedelta(days=7)),
        (timedelta(days=6), timedelta(days=7)),
        (timedelta(days=10), timedelta(days=11)),
    ],
)
def test_a_retry_topic_keeps_records_a_day_past_the_age_limit_and_a_week_at_least(
    max_age: timedelta, retention: timedelta
) -> None:
    assert retry_topic_retention(max_age) == retention


STEPS = st.builds(
    lambda number, unit: f"{number}{unit}",
    st.integers(1, 10_000),
    st.sampled_from(["s", "m", "h", "S", "M", "H"]),
)
SCHEDULES = st.lists(STEPS, min_size=1, max_size=8).map(
    lambda steps: parse_schedule(",".join(steps))
)
MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
AGES = st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=365))
ELAPSED = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400))


@PROPERTIES
@given(st.lists(st.tuples(st.integers(1, 999_999), st.sampled_from("smh")), min_size=1, max_size=8))
def test_every_schedule_written_reads_back_step_for_step(steps: list[tuple[int, str]]) -> None:
    schedule = parse_schedule(",".join(f"{number}{unit}" for number, unit in steps))

    assert [step.label for step in schedule] == [f"{number}{unit}" for number, unit in steps]
    assert [step.delay.total_seconds() for step in schedule] == [
        number * {"s": 1, "m": 60, "h": 3600}[unit] for number, unit in steps
    ]


@PROPERTIES
@given(st.text(max_size=30))
def test_any_text_is_a_duration_or_a_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert parse_duration(text) > timedelta(0)


@PROPERTIES
@given(st.integers(0, 1000), MOMENTS, ELAPSED, SCHEDULES, AGES)
def test_the_next_try_is_one_step_later_never_past_the_age_limit(
    attempt: int,
    accepted_at: datetime,
    elapsed: timedelta,
    schedule: RetrySchedule,
    max_age: timedelta,
) -> None:
    now = accepted_at + elapsed

    step = next_step(attempt, accepted_at, now, schedule, max_age, email_topic="email.send")

    delay = step_for(attempt + 1, schedule).delay
    if isinstance(step, Retry):
        assert step.attempt == attempt + 1
        assert step.due_at == now + delay <= accepted_at + max_age
        assert step.topic in retry_topics("email.send", schedule)
    else:
        assert now + delay > step.deadline == accepted_at + max_age


@PROPERTIES
@given(st.integers(0, 1000), MOMENTS, ELAPSED, ELAPSED, SCHEDULES, AGES)
def test_once_expired_an_email_stays_expired(
    attempt: int,
    accepted_at: datetime,
    elapsed: timedelta,
    later: timedelta,
    schedule: RetrySchedule,
    max_age: timedelta,
) -> None:
    def step(now: datetime) -> Retry | Expired:
        return next_step(attempt, accepted_at, now, schedule, max_age, email_topic="email.send")

    if isinstance(step(accepted_at + elapsed), Expired):
        assert isinstance(step(accepted_at + elapsed + later), Expired)


RETRY_RECORD = RetryRecord(
    message_id=EXAMPLE_RECORD.message_id,
    attempt=1,
    due_at=datetime(2026, 11, 25, 9, 31, 1, 250000, tzinfo=UTC),
    deferred_at=datetime(2026, 11, 25, 9, 30, 1, 250000, tzinfo=UTC),
    owed=["Ops <ops@example.com>"],
    last_reply=Reply(code=451, enhanced="4.7.1", text="Greylisted, try again in 60 seconds"),
    origin=Position(topic="email.send", partition=1, offset=42),
    email=EXAMPLE_RECORD,
)
RETRY_BYTES = (
    b'{"schema_version":1,"message_id":"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10","attempt":1,'
    b'"due_at":"2026-11-25T09:31:01.250000Z","deferred_at":"2026-11-25T09:30:01.250000Z",'
    b'"owed":["ops@example.com"],'
    b'"last_reply":{"code":451,"enhanced":"4.7.1","text":"Greylisted, try again in 60 seconds"},'
    b'"origin":{"topic":"email.send","partition":1,"offset":42},'
    b'"email":' + EXAMPLE_BYTES + b"}"
)


def test_a_retry_record_is_pinned_byte_for_byte_with_the_email_unchanged_inside() -> None:
    key, value, headers = RETRY_RECORD.to_kafka()

    assert key == b"0b5e1c2a-8f0e-5a55-9c4e-3f1d2b7a9e10"
    assert value == RETRY_BYTES
    assert headers == [("schema_version", b"1"), ("due_at", b"2026-11-25T09:31:01.250000Z")]


def test_a_retry_record_round_trips() -> None:
    assert parse_retry_record(RETRY_BYTES) == RETRY_RECORD


def test_the_due_at_header_is_read_without_the_value() -> None:
    _, _, headers = RETRY_RECORD.to_kafka()

    assert due_at_header([("traceparent", b"00-ab"), *headers]) == RETRY_RECORD.due_at


def retry_document(**changes: Any) -> bytes:
    """The pinned record with some fields changed; `...` leaves a field out."""
    fields = json.loads(RETRY_BYTES)
    fields.update(changes)
    return json.dumps({name: value for name, value in fields.items() if value is not ...}).encode()


def email_changed(**changes: Any) -> bytes:
    return retry_document(email={**json.loads(EXAMPLE_BYTES), **changes})


BOUNCE = {"code": 550, "enhanced": "5.1.1", "text": "No such mailbox"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "the retry record has no value"),
        (b"hello1", "the retry record is not JSON"),
        (b"\xff", "the retry record is not UTF-8"),
        (b'"x"', "the retry record is JSON but not an object: str"),
        (retry_document(schema_version=2), "unknown schema_version 2: .* version 1 of retry"),
        (retry_document(email=...), "the retry record has no email"),
        (email_changed(schema_version=9), "the retry record's email: unknown schema_version 9"),
        (email_changed(to=["nobody"]), "the retry record's email: .*to.0: .*not a valid email"),
        (retry_document(message_id="x"), "email: the email embedded is '0b5e.*', .* for 'x'"),
        (retry_document(owed=[]), "owed: List should have at least 1 item"),
        (retry_document(owed=["x@example.com"]), "owed names addresses the email is not for: x@"),
        (retry_document(attempt=0), "attempt: Input should be greater than or equal to 1"),
        (retry_document(last_reply=BOUNCE), "last_reply: a deferral's reply is a 4xx, got 550"),
        (retry_document(due_at="soon"), "due_at: Input should be a valid datetime"),
    ],
)  # fmt: skip
def test_unreadable_retry_records_are_poison_with_the_reason(
    value: bytes | None, reason: str
) -> None:
    with pytest.raises(PoisonRecord, match=reason):
        parse_retry_record(value)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "a retry record has one due_at header, this one has 0"),
        ([("due_at", b"2026-11-25T09:31:01Z")] * 2, "this one has 2"),
        ([("due_at", b"soon")], "the due_at header b'soon' is not a time such as"),
        ([("due_at", b"\xff")], "is not a time"),
    ],
)
def test_a_due_at_header_that_is_not_one_time_is_poison(
    headers: list[tuple[str, bytes]], reason: str
) -> None:
    with pytest.raises(PoisonRecord, match=reason):
        due_at_header(headers)


@PROPERTIES
@given(email_records())
def test_every_accepted_email_survives_a_retry_record_byte_for_byte(fields: dict[str, Any]) -> None:
    """The retry sends the same message: render_email gets an equal record."""
    email = EmailRecord.model_validate(fields)
    record = RETRY_RECORD.model_copy(
        update={"message_id": email.message_id, "email": email, "owed": [email.recipients[0]]}
    )

    _, value, _ = record.to_kafka()

    assert email.to_kafka()[1] in value
    assert parse_retry_record(value).email == email
