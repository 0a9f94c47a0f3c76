"""The sink's HTTP API: Mailpit API v1's routes and shapes, /api/v1/stats, /metrics, health
probes, and the web inbox at /. Thin routes: each asks the store, builds a shape, and answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from importlib import metadata, resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from services.smtp_sink.api import shapes
from services.smtp_sink.api.metrics import SinkMetrics
from services.smtp_sink.api.paging import DEFAULT_LIMIT, PagingError, read_paging
from services.smtp_sink.api.search import Filter, SearchError, parse_query
from services.smtp_sink.mailbox import MailboxPage, SearchPage, SinkStats, StoredMessage
from services.smtp_sink.mime import LARGE_MESSAGE_BYTES, read_message
from services.smtp_sink.simulator.faults import ChaosError, FaultPolicy, chaos_triggers
from shared.metrics_endpoint import PrometheusAnswer

# Written out: its log lines keep this name wherever the module is (readers and tests look for it).
log = logging.getLogger("services.smtp_sink.api")

T = TypeVar("T")

LATEST = "latest"
READY_TIMEOUT_SECONDS = 2.0

# The inbox shows what strangers wrote, so its page may run only its own script file.
INBOX_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        # The HTML view is an iframe's srcdoc, which inherits this policy: the email's own
        # inline styles and data: images need these (its scripts stay blocked, twice over).
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
INBOX_HEADERS = {
    "Content-Security-Policy": INBOX_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
INBOX_FILES = {
    "index.html": "text/html; charset=utf-8",
    "inbox.js": "text/javascript; charset=utf-8",
    "inbox.css": "text/css; charset=utf-8",
}


class MailboxReader(Protocol):
    db_path: Path

    async def page(self, start: int, limit: int) -> MailboxPage: ...
    async def latest_id(self) -> str | None: ...
    async def message(
        self, message_id: str, *, mark_read: bool
    ) -> tuple[StoredMessage, bytes] | None: ...
    async def raw(self, message_id: str) -> bytes | None: ...
    async def delete(self, message_ids: list[str] | None) -> int: ...
    async def search(self, filters: tuple[Filter, ...], start: int, limit: int) -> SearchPage: ...
    async def delete_matching(self, filters: tuple[Filter, ...]) -> int: ...
    async def stats(self) -> SinkStats: ...
    async def ping(self) -> None: ...


def build_app(
    store: MailboxReader,
    smtp_listening: Callable[[], bool],
    metrics: SinkMetrics,
    faults: FaultPolicy,
) -> FastAPI:
    """The app; faults is the SMTP handler's own policy, whose chaos triggers it sets."""
    app = FastAPI(
        title="SMTP sink",
        summary="Mailpit API v1 routes and shapes, plus /api/v1/stats for duplicate Message-IDs.",
    )
    inbox = _inbox_files()
    version = _version()

    async def resolve(message_id: str) -> str | None:
        return await store.latest_id() if message_id == LATEST else message_id

    @app.get("/api/v1/messages", response_model=shapes.MessagesSummary)
    async def list_messages(start: str = "0", limit: str = str(DEFAULT_LIMIT)) -> Any:
        """Messages from newest to oldest; a start or limit the sink cannot use is a 400."""
        try:
            paging = read_paging(start, limit)
        except PagingError as error:
            return PlainTextResponse(str(error), 400)
        page = await store.page(paging.start, paging.limit)
        return shapes.messages_summary(page, paging.start)

    @app.delete("/api/v1/messages", response_class=PlainTextResponse)
    async def delete_messages(request: Request) -> Any:
        """Delete the messages whose IDs are in {"IDs": [...]}, or all without IDs."""
        body = await request.body()
        try:
            request_json = _json(body) if body.strip() else {}
        except ValueError:
            # Mailpit deletes everything on a body it cannot read; the sink refuses instead.
            return PlainTextResponse('invalid JSON body, expected {"IDs": [...]}', 400)
        message_ids = request_json.get("IDs") if isinstance(request_json, dict) else None
        if message_ids is not None and not (
            isinstance(message_ids, list) and all(_is_text(i) for i in message_ids)
        ):
            return PlainTextResponse(
                "IDs must be a list of message IDs, each a string of Unicode text", 400
            )
        metrics.deleted(await store.delete(message_ids or None))
        if not message_ids:
            metrics.start_over()
        return "ok"

    @app.get("/api/v1/search", response_model=shapes.MessagesSummary)
    async def search_messages(
        query: str = "", start: str = "0", limit: str = str(DEFAULT_LIMIT)
    ) -> Any:
        """Mailpit's search: the matching messages, newest first; messages_count counts them."""
        try:
            filters = parse_query(query)
            paging = read_paging(start, limit)
        except (SearchError, PagingError) as error:
            return PlainTextResponse(str(error), 400)
        page = await store.search(filters, paging.start, paging.limit)
        return shapes.search_summary(page, paging.start)

    @app.delete("/api/v1/search", response_class=PlainTextResponse)
    async def delete_search(query: str = "") -> Any:
        """Delete the messages matching a Mailpit search."""
        try:
            filters = parse_query(query)
        except SearchError as error:
            return PlainTextResponse(str(error), 400)
        metrics.deleted(await store.delete_matching(filters))
        return "ok"

    async def read(ID: str) -> tuple[shapes.Message, bytes] | None:
        """The message in Mailpit's shape and its raw source, marked as read."""
        message_id = await resolve(ID)
        found = await store.message(message_id, mark_read=True) if message_id else None
        if found is None:
            return None
        stored, raw = found
        message = await _off_the_loop_if_large(
            raw, lambda: shapes.message(stored, read_message(raw))
        )
        return message, raw

    @app.get("/api/v1/message/{ID}", response_model=shapes.Message)
    async def get_message(ID: str) -> Any:
        """The message, marked as read; `latest` is the newest message."""
        found = await read(ID)
        return _not_found(ID) if found is None else found[0]

    @app.get("/api/v1/messages/{ID}", response_model=shapes.MessageWithRaw)
    async def get_message_with_raw(ID: str) -> Any:
        """The sink's own route: one message with its raw source, for a look in one request."""
        found = await read(ID)
        if found is None:
            return _not_found(ID)
        message, raw = found
        return shapes.MessageWithRaw(**message.model_dump(), Raw=raw.decode("utf-8", "replace"))

    @app.get("/api/v1/message/{ID}/raw", response_class=PlainTextResponse)
    async def get_raw(ID: str) -> Any:
        message_id = await resolve(ID)
        raw = await store.raw(message_id) if message_id else None
        if raw is None:
            return _not_found(ID)
        return Response(raw, media_type="text/plain; charset=utf-8")

    @app.get("/api/v1/message/{ID}/headers", response_model=dict[str, list[str]])
    async def get_headers(ID: str) -> Any:
        message_id = await resolve(ID)
        raw = await store.raw(message_id) if message_id else None
        if raw is None:
            return _not_found(ID)
        return await _off_the_loop_if_large(raw, lambda: shapes.headers(read_message(raw)))

    @app.get("/api/v1/stats", response_model=shapes.Stats)
    async def get_stats() -> Any:
        """The sink's own route: received messages, distinct Message-IDs, duplicates, the
        latency, and the most emails begun in one second."""
        return shapes.stats(await store.stats(), metrics.latency(), metrics.max_rate_1s())

    @app.get("/api/v1/info", response_model=shapes.AppInformation)
    async def get_info() -> Any:
        """Mailpit's application information: the mailbox's counts, the database, and what the
        sink has counted since it started."""
        return shapes.app_information(
            version=version,
            database=str(store.db_path.absolute()),
            database_size=_database_size(store.db_path),
            mailbox=await store.page(0, 0),
            runtime=metrics.runtime(),
        )

    @app.get("/api/v1/chaos", response_model=shapes.ChaosTriggers)
    async def get_chaos() -> Any:
        """Mailpit's chaos triggers; always enabled here, every probability 0 until set."""
        return shapes.chaos_triggers(faults.chaos.triggers)

    @app.put("/api/v1/chaos", response_model=shapes.ChaosTriggers)
    async def set_chaos(request: Request) -> Any:
        """Set every trigger at once, as Mailpit does: a trigger left out is switched off.
        A body the sink cannot take changes nothing and is a 400 that says why."""
        try:
            triggers = chaos_triggers(_json(await request.body()))
        except ChaosError as error:
            return PlainTextResponse(str(error), 400)
        except ValueError:
            return PlainTextResponse(
                'invalid JSON body, expected {"Sender": {"ErrorCode": 451, "Probability": 5}, '
                '"Recipient": {...}, "Authentication": {...}}',
                400,
            )
        faults.chaos.triggers = triggers
        log.info("chaos triggers set: %s", triggers.describe())
        return shapes.chaos_triggers(triggers)

    @app.get("/metrics")
    async def get_metrics() -> PrometheusAnswer:
        """Messages received, duplicates, end-to-end latency, for Prometheus."""
        return PrometheusAnswer(metrics.registry)

    def inbox_file(name: str) -> Response:
        if name not in inbox:
            return PlainTextResponse(f"No inbox file {name!r}", 404)
        return Response(inbox[name], media_type=INBOX_FILES[name], headers=INBOX_HEADERS)

    @app.get("/", response_class=Response)
    async def get_inbox() -> Response:
        """The web inbox: the messages, live, as Mailpit users expect at /."""
        return inbox_file("index.html")

    @app.get("/inbox/{name}", response_class=Response)
    async def get_inbox_file(name: str) -> Response:
        return inbox_file(name)

    @app.get("/livez", response_class=PlainTextResponse)
    @app.get("/healthz", response_class=PlainTextResponse)
    async def alive() -> str:
        return "ok"

    @app.get("/readyz", response_class=PlainTextResponse)
    async def ready() -> Any:
        if not smtp_listening():
            return PlainTextResponse("not ready: the SMTP server is not listening", 503)
        try:
            await asyncio.wait_for(store.ping(), READY_TIMEOUT_SECONDS)
        except TimeoutError:
            return PlainTextResponse("not ready: the database did not answer in time", 503)
        except Exception as error:
            return PlainTextResponse(f"not ready: the database is not usable: {error}", 503)
        return "ok"

    return app


def _inbox_files() -> dict[str, bytes]:
    """The inbox's files, read once: they are package data and small."""
    folder = resources.files("services.smtp_sink.api").joinpath("inbox")
    return {name: folder.joinpath(name).read_bytes() for name in INBOX_FILES}


def _version() -> str:
    """What /api/v1/info calls the version: this project's, not a Mailpit release."""
    try:
        release = metadata.version("kafka-email-pipeline")
    except metadata.PackageNotFoundError:
        release = "unknown"
    return f"kafka-email-pipeline {release} (SMTP sink, Mailpit API v1)"


def _database_size(db_path: Path) -> int:
    """The database's bytes on disk, with its write-ahead log (where the latest writes are)."""
    size = 0
    for path in (db_path, db_path.with_name(db_path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            size += path.stat().st_size
    return size


def _not_found(message_id: str) -> PlainTextResponse:
    if message_id == LATEST:
        return PlainTextResponse("Message not found: the sink has no messages", 404)
    return PlainTextResponse(f"Message not found: no message has ID {message_id!r}", 404)


async def _off_the_loop_if_large(raw: bytes, work: Callable[[], T]) -> T:
    """work(), which reads the raw message: in a thread if it is large (mime.LARGE_MESSAGE_BYTES),
    so that the SMTP sessions on the event loop are not held up."""
    if len(raw) < LARGE_MESSAGE_BYTES:
        return work()
    return await asyncio.to_thread(work)


def _json(body: bytes) -> object:
    """The body's JSON; ValueError for a body that is none, nested too deep included (json
    says so with a RecursionError)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def _is_text(value: object) -> bool:
    """A string SQLite can take: JSON's \\ud800 escapes give Python strings that are not."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
