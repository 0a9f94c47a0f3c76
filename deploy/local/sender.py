"""`make send`: emails through the API, as any client would send them, with an Idempotency-Key."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import httpx

from deploy.local.errors import StackError
from shared.settings import Settings

DEMO_SENDER = "Kafka Demo <demo@example.com>"


def api_url(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


def post_email(
    client: httpx.Client, settings: Settings, email: Mapping[str, object], idempotency_key: str
) -> dict[str, object]:
    """POST /emails; the API's answer (id, topic, partition, offset) once Kafka has the record."""
    url = f"{api_url(settings)}/emails"
    try:
        response = client.post(url, json=email, headers={"Idempotency-Key": idempotency_key})
    except httpx.HTTPError as error:
        raise StackError(
            f"The API does not answer at {url} ({error}): start the stack with `make up`."
        ) from None
    if response.status_code != 202:
        raise StackError(f"The API answered {response.status_code}: {response.text}")
    queued: dict[str, object] = response.json()
    return queued


def send(settings: Settings, to: str, subject: str, count: int) -> None:
    with httpx.Client(timeout=10) as client:
        for number in range(1, count + 1):
            numbered_subject = subject if count == 1 else f"{subject} #{number}"
            email = {
                "from": DEMO_SENDER,
                "to": [to],
                "subject": numbered_subject,
                "text": f"{numbered_subject}\n\nSent by `make send` through the API and Kafka.",
            }
            queued = post_email(client, settings, email, idempotency_key=str(uuid.uuid4()))
            print(
                f"202 queued {queued['id']}: {queued['topic']}-{queued['partition']} "
                f"offset {queued['offset']}  to {to}  {numbered_subject!r}"
            )
