"""The API's and the sink's numbers, read over their HTTP APIs, and an email's journey.

The API: its Prometheus counter of accepted emails, and `GET /emails/{id}` (an email's status
and history) passed through for the page. The sink: its own `/api/v1/stats` (received,
duplicates, end-to-end latency) and Mailpit's `/api/v1/messages` for the newest ones.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter, ValidationError

from services.console.snapshot import RecentMessage, SinkReading
from shared.schema import MessageId

ACCEPTED_METRIC = "email_api_emails_accepted"  # the family of email_api_emails_accepted_total
RECENT_MESSAGES = 20
# A person waits for this answer: longer than a tick's reads, which the next tick replaces.
EMAIL_TIMEOUT_SECONDS = 5.0
MESSAGE_IDS = TypeAdapter(MessageId)


class SourceError(Exception):
    """A source did not answer usefully; the message says how, in one line."""


class ApiSource:
    def __init__(self, http: httpx.AsyncClient, api_url: str) -> None:
        self.http = http
        self.api_url = api_url.rstrip("/")
        self.metrics_url = f"{self.api_url}/metrics"

    async def email(self, message_id: str) -> tuple[int, dict[str, Any]]:
        """The API's answer to `GET /emails/{message_id}`, its status code and JSON object as
        they are (200: the email's status and history; 404: an id it does not know); a
        SourceError when it does not answer, or not with a JSON object. The id must have
        passed `message_id_problem`."""
        url = f"{self.api_url}/emails/{quote(message_id, safe='')}"
        try:
            response = await self.http.get(url, timeout=EMAIL_TIMEOUT_SECONDS)
        except httpx.HTTPError as error:
            raise SourceError(f"{url}: {type(error).__name__} {error}".rstrip()) from error
        return response.status_code, _json_object(
            response.text, f"{url} (status {response.status_code})"
        )

    async def accepted_total(self) -> float:
        text = await _get(self.http, self.metrics_url)
        for family in text_string_to_metric_families(text):
            if family.name == ACCEPTED_METRIC:
                return sum(
                    sample.value for sample in family.samples if sample.name.endswith("_total")
                )
        raise SourceError(f"{self.metrics_url} has no {ACCEPTED_METRIC}_total")


class SinkSource:
    def __init__(self, http: httpx.AsyncClient, sink_url: str) -> None:
        self.http = http
        base = sink_url.rstrip("/")
        self.stats_url = f"{base}/api/v1/stats"
        self.messages_url = f"{base}/api/v1/messages?limit={RECENT_MESSAGES}"
        self._recent: tuple[RecentMessage, ...] = ()
        self._recent_of: tuple[int, int] | None = None  # (received, duplicates) they were read at

    async def read(self) -> SinkReading:
        stats = _json_object(await _get(self.http, self.stats_url), self.stats_url)
        received, duplicates = int(stats["received"]), int(stats["duplicates"])
        if (received, duplicates) != self._recent_of:
            # Only when something arrived (or was deleted): an idle console reads one thing.
            listing = _json_object(await _get(self.http, self.messages_url), self.messages_url)
            self._recent = tuple(recent_message(summary) for summary in listing["messages"])
            self._recent_of = (received, duplicates)
        latency = stats.get("latency") or {}
        return SinkReading(
            received_total=received,
            duplicates_total=duplicates,
            latency_p50_seconds=latency.get("p50_seconds"),
            latency_p99_seconds=latency.get("p99_seconds"),
            latency_count=int(latency.get("count") or 0),
            recent_messages=self._recent,
        )


def message_id_problem(message_id: str) -> str | None:
    """What is wrong with an id typed into the page, or None: ids are the API's, as its 202
    answered them (`id`)."""
    try:
        MESSAGE_IDS.validate_python(message_id)
    except ValidationError:
        return (
            f"{message_id[:80]!r} is not a message id: an id is 1 to 200 letters, digits, '.', "
            "'_' or '-', as the `id` of the API's 202 answer"
        )
    if set(message_id) == {"."}:
        return f"{message_id!r} is not a message id: an id is more than dots"
    return None


def recent_message(summary: dict[str, Any]) -> RecentMessage:
    """A Mailpit MessageSummary, with the sink's duplicate fields."""
    return RecentMessage(
        id=summary["ID"],
        message_id=summary["MessageID"],
        received_at=summary["Created"],
        sender=summary["From"]["Address"] if summary.get("From") else "",
        recipients=tuple(address["Address"] for address in summary.get("To") or []),
        subject=summary["Subject"],
        duplicate=bool(summary.get("Duplicate")),
        message_id_count=int(summary.get("MessageIDCount", 1)),
    )


async def _get(http: httpx.AsyncClient, url: str) -> str:
    try:
        response = await http.get(url)
    except httpx.HTTPError as error:
        raise SourceError(f"{url}: {type(error).__name__} {error}".rstrip()) from error
    if response.status_code != 200:
        raise SourceError(f"{url} answered {response.status_code}")
    return response.text


def _json_object(text: str, url: str) -> dict[str, Any]:
    try:
        answer = json.loads(text)
    except ValueError as error:
        raise SourceError(f"{url} did not answer JSON: {error}") from error
    if not isinstance(answer, dict):
        raise SourceError(f"{url} did not answer a JSON object")
    return answer
