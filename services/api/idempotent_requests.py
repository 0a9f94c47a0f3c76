"""Between a route and the key store: a request with an Idempotency-Key claims it and its answer
is kept; a request whose key was seen before gets that answer again, a 409 while the first is
still in flight, or a 422 if its body is not the first one's. Expired keys are pruned hourly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException
from fastapi.responses import Response

from services.api import metrics
from services.api.errors import problem
from services.api.idempotency import (
    HEADER,
    Claim,
    InFlight,
    KeyPolicy,
    Mismatch,
    Replay,
    TakeOver,
    decide,
)
from services.api.idempotency_store import IdempotencyStore, StoreUnavailable

log = logging.getLogger("api.idempotency")

REPLAYED_HEADER = "Idempotent-Replayed"  # Stripe's name; the draft names none
PRUNE_EVERY_SECONDS = 3600.0
# Rounds of "claim, find the row, take it over" lost to other requests racing for the same
# key before this one answers 409 (they are in flight, whoever won).
CLAIM_ROUNDS = 3


@dataclass(frozen=True)
class Claimed:
    key: str
    claim: str  # this request's token: its writes change the row only while it holds it


class IdempotentRequests:
    def __init__(
        self,
        store: IdempotencyStore,
        policy: KeyPolicy,
        retry_after_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._policy = policy
        self._retry_after_seconds = retry_after_seconds  # when the store is away
        self._clock = clock

    async def answer_once(
        self, key: str | None, fingerprint: str, answer: Callable[[], Awaitable[Response]]
    ) -> Response:
        """`answer()` for a request with a new key (or none), kept for the key's retries: a
        2xx is replayed to them; after a 503 the same body may go again; after any other
        error (413, 422: nothing was queued) the key is free for any body."""
        if key is None:
            return await answer()
        try:
            begun = await self._begin(key, fingerprint)
        except StoreUnavailable as error:
            metrics.refused("key_store_unavailable")
            return problem(
                503,
                f"cannot check the {HEADER}: {error}. Nothing was queued: retry with the same "
                "key later",
                headers={"Retry-After": str(self._retry_after_seconds)},
            )
        if isinstance(begun, Replay):
            metrics.IDEMPOTENT_REPLAYS.inc()
            return Response(
                begun.body,
                status_code=begun.status,
                media_type="application/json",
                headers={REPLAYED_HEADER: "true"},
            )
        if isinstance(begun, Mismatch):
            metrics.refused("key_conflict")
            return problem(
                422,
                "was already used with a different body: send each email with a key of its "
                "own, and a retry with the same body as the first try",
                field=HEADER,
            )
        if isinstance(begun, InFlight):
            metrics.refused("key_conflict")
            return problem(
                409,
                f"a request with this {HEADER} is still being answered: retry after "
                f"{begun.retry_after_seconds} s to get its answer",
                headers={"Retry-After": str(begun.retry_after_seconds)},
            )
        try:
            response = await answer()
        except HTTPException as error:
            await self._end(begun, error.status_code)
            raise
        except Exception:
            await self._end(begun, 500)
            raise
        await self._end(begun, response.status_code, bytes(response.body))
        return response

    async def _begin(self, key: str, fingerprint: str) -> Claimed | Replay | Mismatch | InFlight:
        claim = uuid.uuid4().hex
        for _ in range(CLAIM_ROUNDS):
            now = self._clock()
            row = await self.store.claim(key, fingerprint, claim, now)
            if row is not None and row.claim == claim:
                return Claimed(key, claim)  # a take-over of ours whose answer was lost
            decision = decide(row, fingerprint, now, self._policy)
            if isinstance(decision, Claim):
                return Claimed(key, claim)
            if not isinstance(decision, TakeOver):
                return decision
            assert row is not None  # decide takes over only a row
            if await self.store.take_over(
                row, fingerprint, claim, now, restart_window=decision.restart_window
            ):
                if row.state == "in_flight" and not decision.restart_window:
                    log.warning(
                        "took over an %s claimed %.0f s ago by a request that never finished "
                        "(its API process stopped?)",
                        HEADER, now - row.claimed_at,
                    )  # fmt: skip
                return Claimed(key, claim)
        return InFlight()

    async def _end(self, claimed: Claimed, status: int, body: bytes = b"") -> None:
        """Keep a 2xx for the retries; let the same body go again after a 5xx; forget the key
        after a 4xx. A write that fails leaves the claim in flight: a retry gets 409 until it
        is taken over, and then produces the same message ids again (the worker skips them)."""
        try:
            if 200 <= status < 300:
                await self.store.finish(claimed.key, claimed.claim, status, body)
            elif status >= 500:
                await self.store.interrupt(claimed.key, claimed.claim)
            else:
                await self.store.release(claimed.key, claimed.claim)
        except StoreUnavailable as error:
            log.warning("could not keep the %d answer of an %s: %s", status, HEADER, error)

    async def prune_until_stopped(self, stopping: asyncio.Event) -> None:
        """Delete expired keys now and every hour; a key older than the window is a new key to
        `decide` even before it is deleted."""
        while not stopping.is_set():
            try:
                deleted = await self.store.prune(self._clock() - self._policy.keep_seconds)
            except StoreUnavailable as error:
                log.warning(
                    "could not prune expired %ss (%s); trying again in an hour", HEADER, error
                )
            else:
                if deleted:
                    log.info("pruned %d expired %s(s)", deleted, HEADER)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=PRUNE_EVERY_SECONDS)
