"""The worker's edge toward the SMTP server: persistent connections, one per lane."""

from __future__ import annotations

from aiosmtplib import SMTP, SMTPNotSupported, SMTPResponse

from services.worker.mime import OutgoingEmail


class SmtpConnection:
    """Opened on first use, reused for every email, and opened afresh after any failure."""

    def __init__(self, host: str, port: int, timeout_seconds: float) -> None:
        self._host = host
        self._port = port
        self._timeout_seconds = timeout_seconds
        self._client: SMTP | None = None

    async def send(self, email: OutgoingEmail, recipients: list[str]) -> dict[str, SMTPResponse]:
        """Send one email; returns the recipients the server refused while taking the rest."""
        try:
            if self._client is None or not self._client.is_connected:
                self._client = SMTP(
                    hostname=self._host, port=self._port, timeout=self._timeout_seconds
                )
                await self._client.connect()
            options = []
            if email.smtputf8:
                if not self._client.supports_extension("smtputf8"):
                    raise SMTPNotSupported(
                        "a mailbox of this email is not ASCII, and the server does not offer "
                        "SMTPUTF8"
                    )
                options = ["SMTPUTF8", "BODY=8BITMIME"]
            refused, _ = await self._client.sendmail(
                email.sender, recipients, email.data, mail_options=options
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
