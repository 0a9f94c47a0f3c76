"""The sink's printed log: one compact block per stored message, one line per refusal.

Pure formatting; a duplicate Message-ID is shouted on a line of its own so a tail cannot miss it.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.smtp_sink.mailbox import Envelope, StoredMessage
from services.smtp_sink.mime import Address

_SHOWN_CHARS = 120


def arrival_block(stored: StoredMessage) -> str:
    summary = stored.summary
    created = stored.created.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    lines = [
        f"=== {created} UTC  id {stored.id}  {stored.size} bytes",
        f"    Message-ID: {_message_id(summary.message_id)}",
        f"    From:       {_shown(_address(summary.sender) or stored.envelope.mail_from)}",
        f"    To:         {_shown(_addresses((*summary.to, *summary.cc, *summary.bcc)))}",
        f"    Subject:    {_shown(summary.subject)}",
        f"    Text:       {_shown(summary.first_line)}",
    ]
    if stored.sighting.duplicate:
        lines.append(
            f"!!! DUPLICATE Message-ID {_message_id(summary.message_id)} "
            f"(seen {stored.sighting.message_id_count} times)"
        )
    return "\n".join(lines) + "\n"


def refusal_line(reply: str, envelope: Envelope, recipient: str | None = None) -> str:
    """A refused recipient (RCPT) or a refused message (end of DATA)."""
    target = recipient if recipient is not None else ", ".join(envelope.rcpt_tos)
    return (
        f"--- refused {'RCPT' if recipient is not None else 'message'} "
        f"from {_shown(envelope.mail_from) or '<>'} to {_shown(target)}: {reply}\n"
    )


def sender_refusal_line(reply: str, mail_from: str) -> str:
    """A refused sender (MAIL FROM)."""
    return f"--- refused MAIL from {_shown(mail_from) or '<>'}: {reply}\n"


def _message_id(message_id: str) -> str:
    return f"<{_shown(message_id)}>" if message_id else "(none)"


def _address(address: Address) -> str:
    if address.name and address.address:
        return f"{address.name} <{address.address}>"
    return address.address or address.name


def _addresses(addresses: Iterable[Address]) -> str:
    return ", ".join(_address(address) for address in addresses)


def _shown(value: str) -> str:
    """Printable and short: control characters from hostile input must not reach a terminal."""
    printable = (
        value if value.isprintable() else "".join(c if c.isprintable() else "?" for c in value)
    )
    if len(printable) <= _SHOWN_CHARS:
        return printable
    return printable[:_SHOWN_CHARS] + "..."
