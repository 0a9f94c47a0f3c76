"""The sink's fast reading of MAIL and RCPT paths answers what aiosmtpd's own parser does."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP

from services.smtp_sink.smtp import SinkSMTP

PATHS = [
    "<a@b.c>",
    "<a@b.c> SIZE=100",
    "<a@b.c>  SIZE=100 BODY=8BITMIME",
    " <a@b.c>",
    "<A.B+tag@Example-Mail.COM>",
    "<o'brien@example.com>",
    "<a..b@example.com>",
    "<.a@example.com>",
    "<a@example..com>",
    "<a@-example.com>",
    "<a@[192.0.2.1]>",
    '<"two words"@example.com>',
    "<@relay.example:a@b.c>",
    "<>",
    "",
    "a@b.c",
    "<a@b.c",
    "<ü@example.com>",
    "<a@exämple.com>",
    "<a b@example.com>",
    "<" + "x" * 65 + "@example.com>",
    "<" + "x" * 64 + "@example.com>",
]


def session(kind: type[SMTP], local_part_limit: int) -> SMTP:
    server = kind.__new__(kind)
    server.local_part_limit = local_part_limit
    return server


@pytest.mark.parametrize("local_part_limit", [0, 64])  # none (the sink's), RFC 5321's
@pytest.mark.parametrize("path", PATHS)
def test_a_path_reads_as_aiosmtpd_reads_it(path: str, local_part_limit: int) -> None:
    fast = session(SinkSMTP, local_part_limit)._getaddr(path)

    assert fast == session(SMTP, local_part_limit)._getaddr(path)
