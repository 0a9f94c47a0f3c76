"""Raw messages for the sink's unit tests, as the bytes an SMTP client sends after DATA."""

from __future__ import annotations

from email.message import EmailMessage

PLAIN = (
    b"From: Ann Sender <ann@example.com>\r\n"
    b"To: bob@example.com, Carol <carol@example.com>\r\n"
    b"Cc: dan@example.com\r\n"
    b"Reply-To: replies@example.com\r\n"
    b"Subject: Hello Bob\r\n"
    b"Message-ID: <plain-1@example.com>\r\n"
    b"Date: Tue, 25 Nov 2025 18:00:00 +0100\r\n"
    b"\r\n"
    b"First line of the body.\r\n"
    b"Second line.\r\n"
)


def multipart_with_attachment() -> bytes:
    message = EmailMessage()
    message["From"] = "=?utf-8?q?Zo=C3=AB?= <zoe@example.com>"
    message["To"] = "bob@example.com"
    message["Subject"] = "=?utf-8?q?R=C3=A9sum=C3=A9?= attached"
    message["Message-ID"] = "<multi-1@example.com>"
    message["List-Unsubscribe"] = "<mailto:leave@example.com>, <https://example.com/leave>"
    message.set_content("Plain version\nof the body\n")
    message.add_alternative("<p>HTML <b>version</b> &amp; more</p>", subtype="html")
    message.add_attachment(
        b"%PDF-1.4 data", maintype="application", subtype="pdf", filename="resume.pdf"
    )
    return message.as_bytes()


UTF8_HEADERS = (
    "From: Zoë <zoë@exämple.com>\r\n"
    "To: jürgen@exämple.com\r\n"
    "Subject: Grüße aus Köln\r\n"
    "Message-ID: <utf8-1@exämple.com>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "Schöne Grüße\r\n"
).encode()
