"""The API's own bounds on one email, counted in its JSON before pydantic reads a field of it:
reading an address costs up to a millisecond, and 20,000 of them took a second only to be
refused."""

from __future__ import annotations

import json


def recipients_over_limit(email: object, max_recipients: int) -> str | None:
    """Why `email` (a JSON value) has too many recipients for API_MAX_RECIPIENTS; None if it
    has not, or is no object (its validation says what it is then)."""
    if not isinstance(email, dict):
        return None
    count = sum(
        len(email[name]) for name in ("to", "cc", "bcc") if isinstance(email.get(name), list)
    )
    if count <= max_recipients:
        return None
    return f"at most {max_recipients} recipients in to, cc and bcc together, got {count}"


def json_bytes(value: object) -> int:
    """The size of `value` as compact JSON in UTF-8: an email's size within a batch, where the
    body's size is that of all of them."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode(errors="surrogatepass"))  # a lone surrogate is the schema's to refuse
