"""The one module that uses aiosmtpd's private names: its SMTP session with two of its steps,
reading a MAIL/RCPT path and reading a DATA section, replaced by faster ones.

What it relies on, in aiosmtpd 1.4.6 (pyproject.toml keeps it below 1.5):
- `SMTP._getaddr(arg) -> (address, rest)`, through which smtp_MAIL, smtp_RCPT and smtp_VRFY read
  a path; FastPathSMTP reads a plain `<local@domain>` itself and hands any other to it;
- `SMTP.smtp_DATA`, whose steps before and after its read loop FastPathSMTP.smtp_DATA repeats
  with what they use: the connection's reader and writer (`_reader`, `_writer`, which
  `_cb_client_connected` sets), `_decode_data`, `_set_post_data_state()` and
  `_call_handler_hook("DATA")`.
tests/unit/smtp_sink/fast_paths/test_aiosmtpd_internals.py fails when aiosmtpd changes any of
them, and holds both paths to aiosmtpd's answers;
tests/integration/smtp_sink/fast_paths/test_data_section.py holds the DATA reading to aiosmtpd's
own loop over loopback.

What they gain, as measured (docs/performance.md, "What made the difference"):
- a plain path without the email package's RFC 5322 parser, which was a fifth of the sink's time
  at full speed: the sink alone over 8 connections went from 1,411 to ~1,870 messages/s;
- DATA in a few bulk reads (fast_paths/data_section.py) where aiosmtpd reads a line at a time:
  13 us of Python for a small email became 5.6 us.
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiosmtpd.smtp import MISSING, SMTP

from services.smtp_sink.fast_paths.data_section import read_data_section

# The name on the SMTP side's log lines, whichever of its modules writes them.
log = logging.getLogger("services.smtp_sink.smtp")

# A plain <local@domain> path, dot-atoms on both sides: what nearly every client sends.
_PLAIN_PATH = re.compile(
    r"\s*<((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>\s*"
)


class FastPathSMTP(SMTP):
    """aiosmtpd's SMTP session with two shortcuts for what nearly every client sends.

    A plain `<local@domain>` path of MAIL and RCPT is read without the email package's full
    RFC 5322 parser (a fifth of the sink's time at full speed); any other path still goes
    through it. DATA is read in a few bulk reads rather than one per line (a quarter).
    """

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_PATH.match(arg)
        if plain is None:
            return super()._getaddr(arg)
        address = plain.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, arg[plain.end() :]

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's smtp_DATA for a handler with handle_DATA (the sink's), with its read loop
        replaced by fast_paths.data_section's; tests/integration/smtp_sink/fast_paths/
        test_data_section.py holds the two to the same answers."""
        if self._decode_data:
            await super().smtp_DATA(arg)  # the sink never asks for decoded text
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            section = await read_data_section(
                self._reader, self.data_size_limit, self.line_length_limit
            )
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            self._writer.close()
            raise
        if section.refusal is not None:
            await self.push(section.refusal)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = self.envelope.original_content = section.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)
