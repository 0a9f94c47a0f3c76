"""SMTP DATA with RFC 5321's two waits (section 4.5.3.2): 2 minutes for the 354, 10 for the reply
to the final "."; aiosmtplib's `SMTP.data` has one timeout for both and does not say which ran out.

What it relies on: aiosmtplib's `SMTP.protocol` and that protocol's `write(bytes)` and
`read_response(timeout=...)`, the two calls its own `execute_data_command` makes (aiosmtplib 5.x).
What it gains: the worker knows when the final "." has left, so that a reply lost after it is an
unknown outcome (the server may have the email), never a plain failure to send again at once, and
a clean stop waits for that reply. tests/integration/worker/test_smtp_data.py fails if aiosmtplib
changes either call.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPResponse,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

from services.worker.smtp_failures import OutcomeUnknown

LINE_START_DOT = re.compile(rb"(?m)^\.")
BARE_LINE_END = re.compile(rb"\r\n|\r|\n")


def dot_stuffed(data: bytes) -> bytes:
    """The message as DATA carries it (RFC 5321 4.5.2): CRLF line ends, a dot doubled at the
    start of a line, and the end of data, CRLF "." CRLF."""
    lines = BARE_LINE_END.sub(b"\r\n", data)
    if not lines.endswith(b"\r\n"):
        lines += b"\r\n"
    return LINE_START_DOT.sub(b"..", lines) + b".\r\n"


async def send_data(
    client: SMTP,
    data: bytes,
    start_timeout: float,
    end_timeout: float,
    final_dot_sent: Callable[[], None],
) -> SMTPResponse:
    """DATA, the message, and the server's reply to its end. Raises SMTPDataError when the
    server refuses, and OutcomeUnknown when no reply comes after the final "." was sent."""
    start = await client.execute_command(b"DATA", timeout=start_timeout)
    if start.code != SMTPStatus.start_input:
        raise SMTPDataError(start.code, start.message)
    protocol = client.protocol
    if protocol is None:
        raise SMTPServerDisconnected("Connection lost")
    message = dot_stuffed(data)
    # The transport takes the whole message at once: from here on, the server may have it.
    final_dot_sent()
    protocol.write(message)
    try:
        reply = await protocol.read_response(timeout=end_timeout)
    except SMTPTimeoutError as error:
        raise OutcomeUnknown(
            f"no reply to the end of DATA within {end_timeout:g} s (SMTP_DATA_END_TIMEOUT_SECONDS)"
        ) from error
    except (SMTPServerDisconnected, ConnectionError) as error:
        raise OutcomeUnknown(f"the connection was lost after the end of DATA ({error})") from error
    if reply.code != SMTPStatus.completed:
        raise SMTPDataError(reply.code, reply.message)
    return reply
