"""`GET /suppressions` and `DELETE /suppressions/{address}`: the addresses that bounced for
good, which the workers no longer send to, a page at a time, and lifting one."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.api.errors import problem
from services.api.routes import RETRY_AFTER, Config, Problem
from services.api.suppressions import Suppressions
from shared.events import recipient_address
from shared.suppressions import MAX_PAGE_SIZE, SuppressionsUnavailable

log = logging.getLogger("api.suppressions")

DEFAULT_PAGE_SIZE = 100


async def get_suppressions(request: Request) -> Suppressions:
    suppressions: Suppressions = request.app.state.suppressions
    return suppressions


SuppressionList = Annotated[Suppressions, Depends(get_suppressions)]


class SuppressedAddress(BaseModel):
    address: str = Field(description="Lower-cased, its domain as A-labels")
    reply: str = Field(description="The server's reply to RCPT that refused it")
    message_id: str = Field(description="The email whose bounce suppressed it")
    created_at: datetime


class SuppressionsPage(BaseModel):
    data: list[SuppressedAddress]
    next: str | None = Field(
        description="`after` for the next page; null when this page is the last"
    )


UNAVAILABLE = {
    "model": Problem,
    "description": "The suppression list (in the dedupe store) cannot be reached; retry later",
    "headers": RETRY_AFTER,
}

router = APIRouter()


@router.get(
    "/suppressions",
    response_model=SuppressionsPage,
    responses={
        422: {"model": Problem, "description": f"`limit` is not 1 to {MAX_PAGE_SIZE}"},
        503: UNAVAILABLE,
    },
)
async def list_suppressions(
    suppressions: SuppressionList,
    settings: Config,
    after: Annotated[
        str | None,
        Query(description="The `next` of the page before: the addresses that sort after it"),
    ] = None,
    limit: Annotated[
        int,
        Query(
            description=f"Addresses in the page, 1 to {MAX_PAGE_SIZE}",
            # Documented, not checked here: the route answers 422 with the reason.
            json_schema_extra={"minimum": 1, "maximum": MAX_PAGE_SIZE},
        ),
    ] = DEFAULT_PAGE_SIZE,
) -> Response:
    """The suppressed addresses in the order of their addresses, a page at a time."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        return problem(
            422,
            f"a page holds 1 to {MAX_PAGE_SIZE} suppressions, not {limit}: ask for fewer, and "
            "for the next page with after=<next>",
            field="limit",
        )
    try:
        page = await (await suppressions.opened()).page(after, limit)
    except SuppressionsUnavailable as error:
        return unavailable(error, settings.api_retry_after_seconds)
    answer = SuppressionsPage(
        data=[SuppressedAddress(**vars(found)) for found in page.suppressions],
        next=page.next_after,
    )
    return Response(answer.model_dump_json(), media_type="application/json")


@router.delete(
    "/suppressions/{address:path}",
    status_code=204,
    responses={
        404: {"model": Problem, "description": "The address is not suppressed"},
        503: UNAVAILABLE,
    },
)
async def lift_suppression(
    address: str, suppressions: SuppressionList, settings: Config
) -> Response:
    """Send to the address again: the next email to it is tried, and if it bounces for good
    again, it is suppressed again."""
    try:
        named = recipient_address(address)  # as the worker suppressed it
    except ValueError:
        named = address
    try:
        lifted = await (await suppressions.opened()).lift(named)
    except SuppressionsUnavailable as error:
        return unavailable(error, settings.api_retry_after_seconds)
    if not lifted:
        return problem(404, f"{address} is not suppressed")
    # The address's domain and a digest, not the address: no address reaches a log.
    domain = named.rpartition("@")[2].lower()
    digest = hashlib.sha256(named.lower().encode()).hexdigest()[:12]
    log.info("lifted the suppression of an address at %s (sha256 %s)", domain, digest)
    return Response(status_code=204)


def unavailable(error: SuppressionsUnavailable, retry_after_seconds: int) -> Response:
    return problem(
        503,
        f"cannot reach the suppression list: {error}. Retry later",
        headers={"Retry-After": str(retry_after_seconds)},
    )
