"""The mails the contract tests send, to our sink and to Mailpit alike: each field of Mailpit's
shapes has something to show (Cc, Reply-To, HTML, an attachment, an inline image, unsubscribe)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib


@dataclass(frozen=True)
class Mail:
    subject: str
    message_id: str  # without the angle brackets, as Mailpit shows it
    message: EmailMessage


def plain(subject: str, message_id: str, to: str = "Bob <bob@example.com>") -> Mail:
    message = EmailMessage()
    message["From"] = "Ann Sender <ann@example.com>"
    message["To"] = to
    message["Cc"] = "dan@example.com"
    message["Reply-To"] = "replies@example.com"
    message["Subject"] = subject
    message["Message-ID"] = f"<{message_id}>"
    message["Date"] = "Tue, 25 Nov 2025 18:00:00 +0100"
    message.set_content(f"{subject}: first line of the body.\nSecond line.\n")
    return Mail(subject, message_id, message)


def rich(subject: str, message_id: str) -> Mail:
    message = EmailMessage()
    message["From"] = "Carol <carol@example.com>"
    message["To"] = "erin@example.com, Frank <frank@example.com>"
    message["Subject"] = subject
    message["Message-ID"] = f"<{message_id}>"
    message["List-Unsubscribe"] = "<mailto:leave@example.com>, <https://example.com/leave>"
    message.set_content("Plain version\nof the invoice\n")
    message.add_alternative(
        '<p>HTML <b>invoice</b> <img src="cid:logo@example.com"></p>', subtype="html"
    )
    html = message.get_body(preferencelist=("html",))
    assert isinstance(html, EmailMessage)
    html.add_related(
        b"\x89PNG\r\n\x1a\nlogo", maintype="image", subtype="png", cid="<logo@example.com>"
    )
    message.add_attachment(
        b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="invoice.pdf"
    )
    return Mail(subject, message_id, message)


def mailbox() -> list[Mail]:
    """Three mails, oldest first, that each search filter tells apart."""
    return [
        plain("Order shipped", "order-1@shop.example"),
        rich("Invoice attached", "invoice-2@billing.example"),
        plain("Weekly digest", "digest-3@news.example", to="Gina <gina@example.com>"),
    ]


async def deliver(smtp_port: int, mails: list[Mail]) -> None:
    """Send each mail in order, one SMTP transaction each, so that arrival order is send order."""
    for mail in mails:
        await aiosmtplib.send(mail.message, hostname="127.0.0.1", port=smtp_port)
