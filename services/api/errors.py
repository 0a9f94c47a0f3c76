"""How the API names what is wrong in a request: each problem as {field, message}, the field
spelled as the JSON reads it (`to[0]`, `headers.X-Trace`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi.responses import JSONResponse


def field_name(location: Sequence[int | str]) -> str:
    """('body', 'to', 0) -> 'to[0]'; ('header', 'Idempotency-Key') -> 'Idempotency-Key'."""
    name = ""
    for part in location[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or "body"


def field_errors(problems: Iterable[Any], within: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """pydantic's problems as {field, message}; `within` is where the validated value sat:
    ("body",) for an email validated on its own, which pydantic locates from its own root."""
    return [
        {
            "field": field_name((*within, *problem["loc"])),
            "message": problem["msg"].removeprefix("Value error, "),
        }
        for problem in problems
    ]


def summary(errors: Iterable[dict[str, str]]) -> str:
    """`to[0]: ...; subject: ...`: the errors on one line, for `detail`."""
    return "; ".join(f"{error['field']}: {error['message']}" for error in errors)


def problem(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error answer in the shape of the API's others: `detail`, and `errors` naming the
    field at fault, when one is."""
    if field is None:
        content: dict[str, object] = {"detail": message}
    else:
        content = {
            "detail": f"{field}: {message}",
            "errors": [{"field": field, "message": message}],
        }
    return JSONResponse(content, status_code=status, headers=headers)
