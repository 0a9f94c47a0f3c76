"""Emails the browser tests and `make screenshot` send through a private stack's API."""

from __future__ import annotations

import httpx

from tests.private_stack import PrivateStack

# What a page does with a subject that is markup; it must show up as these very characters.
HOSTILE_SUBJECT = "<img src=x onerror=\"document.title='pwned'\">"


async def send_emails(stack: PrivateStack, count: int, subject: str = "browser test") -> None:
    async with httpx.AsyncClient(timeout=15) as client:
        for number in range(count):
            response = await client.post(
                f"{stack.api_url}/emails",
                json={
                    "from": "demo@example.com",
                    "to": ["you@example.com"],
                    "subject": subject if count == 1 else f"{subject} #{number + 1}",
                    "text": "hello",
                },
            )
            assert response.status_code == 202, response.text
