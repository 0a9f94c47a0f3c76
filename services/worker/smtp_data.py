"""SMTP DATA with RFC 5321's two waits (section 4.5.3.2): 2 minutes for the 354, 10 for the reply
to the final "."; and the moment the final "." leaves, after which a lost reply is an unknown
outcome (the server may have the email), never a plain failure to send again at once, and a
clean stop waits for the reply."""

from __future__ import annotations

import re
from collections.abc import Callable

from aiosmtplib import (
    SMTPDataError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

from services.worker.smtp_failures import OutcomeUnknown
from services.worker.smtp_protocol import SessionProtocol

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
    session: SessionProtocol,
    data: bytes,
    start_timeout: float,
    end_timeout: float,
    final_dot_sent: Callable[[], None],
) -> SMTPResponse:
    """DATA's 354 (the command written already, alone or last in a pipelined group), the
    message, and the server's reply to its end. Raises SMTPDataError when the server refuses,
    and OutcomeUnknown when no reply comes after the final "." was sent."""
    start = await session.reply(start_timeout)
    if start.code != SMTPStatus.start_input:
        raise SMTPDataError(start.code, start.message)
    message = dot_stuffed(data)
    # The transport takes the whole message at once: from here on, the server may have it.
    final_dot_sent()
    session.send_message(message)
    try:
        reply = await session.reply(end_timeout)
    except SMTPTimeoutError as error:
        raise OutcomeUnknown(
            f"no reply to the end of DATA within {end_timeout:g} s (SMTP_DATA_END_TIMEOUT_SECONDS)"
        ) from error
    except (SMTPServerDisconnected, ConnectionError) as error:
        raise OutcomeUnknown(f"the connection was lost after the end of DATA ({error})") from error
    except SMTPResponseException as error:  # a reply that cannot be read: it may say 250
        raise OutcomeUnknown(
            f"the reply to the end of DATA could not be read ({error.message})"
        ) from error
    if reply.code != SMTPStatus.completed:
        raise SMTPDataError(reply.code, reply.message)
    return reply
