"""The worker's edge toward the SMTP server: one persistent connection per partition."""

from __future__ import annotations

from email.message import EmailMessage

from aiosmtplib import SMTP, SMTPResponse


class SmtpConnection:
    """Opened on first use, reused for every email, and opened afresh after any failure."""

    def __init__(self, host: str, port: int, timeout_seconds: float) -> None:
        self._host = host
        self._port = port
        self._timeout_seconds = timeout_seconds
        self._client: SMTP | None = None

    async def send(
        self, message: EmailMessage, sender: str, recipients: list[str]
    ) -> dict[str, SMTPResponse]:
        """Send one email; returns the recipients the server refused while taking the rest."""
        try:
            if self._client is None or not self._client.is_connected:
                self._client = SMTP(
                    hostname=self._host, port=self._port, timeout=self._timeout_seconds
                )
                await self._client.connect()
            refused, _ = await self._client.send_message(
                message, sender=sender, recipients=recipients
            )
        except BaseException:
            # A half-finished exchange leaves the connection in an unknown state: drop it.
            if self._client is not None:
                self._client.close()
                self._client = None
            raise
        return refused

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except Exception:
                client.close()
