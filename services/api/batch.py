"""`POST /emails/batch`: up to MAX_BATCH_EMAILS emails in one request, each checked on its own,
one result per email in the request's order, and the status code the results make. Pure: the
route (routes.py) produces the valid ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal

from pydantic import BaseModel, ValidationError

from services.api.email_limits import json_bytes, recipients_over_limit
from services.api.email_queue import EmailTooLarge, KafkaUnavailable, Queued
from services.api.errors import field_errors
from shared.schema import EmailContent, EmailRecord

MAX_BATCH_EMAILS: Final = 100  # Resend's bound


class FieldError(BaseModel):
    field: str
    message: str


class QueuedItem(BaseModel):
    """Kafka acknowledged this email's record: what `POST /emails` answers, with its index."""

    index: int
    status: Literal["queued"] = "queued"
    id: str
    topic: str
    partition: int
    offset: int


class RefusedItem(BaseModel):
    """This email was not queued: its errors name the fields, as `POST /emails` names them."""

    index: int
    status: Literal["invalid", "too_large"]
    errors: list[FieldError]


class UnconfirmedItem(BaseModel):
    """Kafka did not acknowledge this email in time (503): it may or may not be queued."""

    index: int
    status: Literal["unconfirmed"] = "unconfirmed"
    id: str


Result = QueuedItem | RefusedItem | UnconfirmedItem


class BatchAnswer(BaseModel):
    results: list[QueuedItem | RefusedItem]


class BatchProblem(BaseModel):
    """No email was queued (422, 413), or not every one surely was (503): `results` says
    which, and why; a request refused as a whole has `errors` instead."""

    detail: str
    errors: list[FieldError] = []
    results: list[Result] = []


def batch_size_problem(count: int) -> str | None:
    if count == 0:
        return "the batch is empty: send a JSON array of 1 to 100 emails"
    if count > MAX_BATCH_EMAILS:
        return (
            f"at most {MAX_BATCH_EMAILS} emails in one batch, got {count}: send them in "
            "several batches"
        )
    return None


def check(
    item: object, index: int, max_recipients: int, max_email_bytes: int
) -> EmailContent | RefusedItem:
    """One email of the batch, checked as `POST /emails` checks its body."""
    too_many = recipients_over_limit(item, max_recipients)
    if too_many is not None:
        return RefusedItem(
            index=index, status="invalid", errors=[FieldError(field="to", message=too_many)]
        )
    size = json_bytes(item)
    if size > max_email_bytes:
        message = (
            f"the email is {size} bytes as JSON, larger than {max_email_bytes} "
            "(API_MAX_BODY_BYTES): send a smaller email"
        )
        return RefusedItem(
            index=index, status="too_large", errors=[FieldError(field="body", message=message)]
        )
    try:
        return EmailContent.model_validate(item)
    except ValidationError as error:
        errors = [FieldError(**e) for e in field_errors(error.errors(), within=("body",))]
        return RefusedItem(index=index, status="invalid", errors=errors)


def fingerprinted(
    items: Sequence[object], checked: Sequence[EmailContent | RefusedItem]
) -> list[object]:
    """The batch as its Idempotency-Key binds it: each valid email as validated, each other
    as sent."""
    return [
        email.model_dump(mode="json", by_alias=True) if isinstance(email, EmailContent) else item
        for item, email in zip(items, checked, strict=True)
    ]


def results(
    refused: Sequence[RefusedItem],
    records: Mapping[int, EmailRecord],
    outcomes: Sequence[Queued | BaseException],
) -> tuple[list[Result], str | None]:
    """Every email's result in the request's order, from the refused ones and what producing
    the others (`records`, by index) gave; and why Kafka did not acknowledge some, if it did
    not."""
    found: list[Result] = list(refused)
    kafka_error = None
    for (index, record), outcome in zip(records.items(), outcomes, strict=True):
        if isinstance(outcome, Queued):
            found.append(
                QueuedItem(
                    index=index,
                    id=record.message_id,
                    topic=outcome.topic,
                    partition=outcome.partition,
                    offset=outcome.offset,
                )
            )
        elif isinstance(outcome, EmailTooLarge):
            error = FieldError(field="body", message=str(outcome))
            found.append(RefusedItem(index=index, status="too_large", errors=[error]))
        elif isinstance(outcome, KafkaUnavailable):
            kafka_error = str(outcome)
            found.append(UnconfirmedItem(index=index, id=record.message_id))
        else:
            raise outcome
    return sorted(found, key=lambda result: result.index), kafka_error


def status_code(results: Sequence[Result]) -> int:
    """503 if Kafka did not acknowledge one; else 202 if one was queued; else 413 if every
    one was too large, 422 if not."""
    if any(isinstance(result, UnconfirmedItem) for result in results):
        return 503
    if any(isinstance(result, QueuedItem) for result in results):
        return 202
    if all(isinstance(result, RefusedItem) and result.status == "too_large" for result in results):
        return 413
    return 422


def answer(results: list[Result], kafka_error: str | None = None) -> tuple[int, str]:
    """The status code and the JSON body of a batch's answer."""
    status = status_code(results)
    if status == 202:
        return status, BatchAnswer.model_validate({"results": results}).model_dump_json()
    refused = sum(isinstance(result, RefusedItem) for result in results)
    if status == 503:
        unconfirmed = sum(isinstance(result, UnconfirmedItem) for result in results)
        detail = (
            f"Kafka did not acknowledge {unconfirmed} of the {len(results)} emails "
            f"({kafka_error}). They may or may not be queued: retry the batch with the same "
            "Idempotency-Key, and each email is delivered once either way (its id stays the same)"
        )
    elif status == 413:
        detail = "every email in the batch is too large; each result says why"
    else:
        detail = f"no email in the batch was queued: {refused} refused; each result says why"
    return status, BatchProblem(detail=detail, results=results).model_dump_json()
