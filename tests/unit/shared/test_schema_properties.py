"""Properties of the wire schema: every email it accepts round-trips through Kafka unchanged and
has an A-label form for every domain; everything it refuses is refused with a ValidationError
(a PoisonRecord when read from the topic), never another exception."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import idna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.schema import EmailContent, EmailRecord, PoisonRecord, mailbox, parse_record
from tests.unit.email_inputs import addresses, email_contents, email_records

PROPERTIES = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIELDS = ["from", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "headers", "tags"]
# Any character, lone surrogates (which JSON can carry) and line breaks included.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=80)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ANY_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)
ODD_ADDRESSES = st.one_of(
    ANY_TEXT,
    st.builds("{}@{}".format, ANY_TEXT, ANY_TEXT),
    st.builds("{} <{}@{}>".format, ANY_TEXT, ANY_TEXT, ANY_TEXT),
    st.builds("a@{}.com".format, ANY_TEXT),
    st.builds("a@xn--{}.com".format, st.text("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=70)),
    st.builds(lambda n, unit: unit * n, st.integers(0, 600), st.sampled_from(["a", "é", "@", '"'])),
)
ODD_VALUES = st.one_of(
    JSON_VALUES,
    ODD_ADDRESSES,
    st.lists(ODD_ADDRESSES, max_size=4),
    st.lists(st.just("ana@example.com"), min_size=99, max_size=120),
    st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=4),
    st.dictionaries(st.from_regex(r"X-[!-9;-~]{1,90}", fullmatch=True), ANY_TEXT, max_size=60),
)


@PROPERTIES
@given(email_records())
def test_every_accepted_record_round_trips_through_kafka_unchanged(fields: dict[str, Any]) -> None:
    record = EmailRecord.model_validate(fields)
    key, value = record.to_kafka()

    assert parse_record(value) == record
    assert key == record.message_id.encode()


@PROPERTIES
@given(email_contents())
def test_every_accepted_email_validates_again_to_itself(fields: dict[str, Any]) -> None:
    """What the API stores (stripped addresses and all) is a fixed point of the schema."""
    email = EmailContent.model_validate(fields)

    assert EmailContent.model_validate(email.model_dump(by_alias=True)) == email


@PROPERTIES
@given(st.one_of(addresses(), ODD_ADDRESSES))
def test_every_accepted_domain_has_an_a_label_form(value: str) -> None:
    """So that the worker can always send an ASCII envelope when the local part is ASCII."""
    try:
        address = mailbox(value.strip())
    except ValueError:
        return
    local_part, _, domain = address.addr_spec.rpartition("@")
    a_labels = idna.encode(domain, uts46=True).decode("ascii")

    assert address.outgoing_addr_spec in {address.addr_spec, f"{local_part}@{a_labels}"}
    assert address.outgoing_addr_spec.rpartition("@")[2].isascii()
    assert len(address.outgoing_addr_spec.encode()) <= 254
    assert address.needs_smtputf8 == (not local_part.isascii())


@PROPERTIES
@given(email_contents(), st.sampled_from([*FIELDS, "priority"]), ODD_VALUES)
def test_an_email_with_any_field_replaced_is_accepted_or_refused_with_a_validation_error(
    fields: dict[str, Any], name: str, value: object
) -> None:
    with contextlib.suppress(ValidationError):
        EmailContent.model_validate({**fields, name: value})


@PROPERTIES
@given(st.one_of(JSON_VALUES, st.dictionaries(st.sampled_from(FIELDS), ODD_VALUES)))
def test_any_json_is_accepted_or_refused_with_a_validation_error(document: object) -> None:
    with contextlib.suppress(ValidationError):
        EmailContent.model_validate_json(json.dumps(document))


@PROPERTIES
@given(st.one_of(st.binary(max_size=200), email_records(), JSON_VALUES))
def test_any_record_on_the_topic_is_read_or_refused_as_poison(record: object) -> None:
    if isinstance(record, bytes):
        value = record
    elif isinstance(record, dict) and "message_id" in record:
        value = EmailRecord.model_validate(record).to_kafka()[1]
    else:
        value = json.dumps({"schema_version": 1, "email": record}).encode()
    with contextlib.suppress(PoisonRecord):
        parse_record(value)


def test_a_refused_email_raises_nothing_but_a_validation_error() -> None:
    """The property above, pinned on the inputs that used to reach deeper than the schema."""
    with pytest.raises(ValidationError):
        EmailContent.model_validate(
            {"from": "a@xn--zz.com", "to": ["\ud800@example.com"], "subject": "s", "text": "t"}
        )
