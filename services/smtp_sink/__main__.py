"""`python -m services.smtp_sink`: the composition root, which builds the sink from the settings.

SMTP and HTTP share one event loop (uvloop if installed) until SIGTERM or SIGINT; then exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from datetime import UTC, datetime
from typing import Any

import uvicorn

from services.smtp_sink.api.app import build_app
from services.smtp_sink.api.metrics import SinkMetrics
from services.smtp_sink.simulator.addresses import SimulatorAddresses
from services.smtp_sink.simulator.faults import FaultPolicy
from services.smtp_sink.simulator.greylist import Greylist
from services.smtp_sink.simulator.rate_limit import RateLimit
from services.smtp_sink.smtp.handler import SinkHandler
from services.smtp_sink.smtp.ids import TimeOrderedIds
from services.smtp_sink.smtp.security import (
    SecurityError,
    SmtpSecurity,
    load_security,
    quiet_aiosmtpd_repeats,
)
from services.smtp_sink.smtp.session import DelayedReplySMTP, SinkSMTP
from services.smtp_sink.smtp.store import MessageStore
from shared.event_loop import run
from shared.http_server import EmbeddedServer, listen
from shared.logs import configure_logging
from shared.settings import Settings, load_settings
from shared.signals import stop_on_signals

log = logging.getLogger("services.smtp_sink")

SMTP_HOSTNAME = "smtp-sink"
SMTP_IDENT = "email-pipeline SMTP sink"


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    # aiosmtpd logs every command line at INFO; its warnings and errors are what matter here.
    if settings.log_level != "DEBUG":
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    quiet_aiosmtpd_repeats()
    run(serve(settings))


async def serve(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    security = _security(settings)
    for warning in security.warnings():
        log.warning("%s", warning)
    smtp_socket = listen("smtp_sink", settings.sink_host, settings.sink_smtp_port, "SMTP")
    http_socket = listen("smtp_sink", settings.sink_host, settings.sink_http_port, "HTTP")
    store = MessageStore(settings.sink_db_path)
    await store.open()
    metrics = SinkMetrics()
    faults = FaultPolicy.of(
        transient_recipients=settings.sink_fail_4xx_recipients,
        permanent_recipients=settings.sink_fail_5xx_recipients,
        transient_rate=settings.sink_fail_4xx_rate,
        permanent_rate=settings.sink_fail_5xx_rate,
        greylist=Greylist(settings.sink_greylist_domains, settings.sink_greylist_seconds),
        rate_limit=_rate_limit(settings.sink_rate_limit),
    )
    simulator = SimulatorAddresses(slow_seconds=settings.sink_simulator_slow_seconds)
    handler = SinkHandler(
        store=store,
        faults=faults,
        simulator=simulator,
        draw=random.random,
        new_id=TimeOrderedIds(),
        clock=_now,
        out=sys.stdout,
        metrics=metrics,
    )
    session_options: dict[str, Any] = {
        "data_size_limit": settings.sink_max_message_bytes,
        "enable_SMTPUTF8": True,
        "hostname": SMTP_HOSTNAME,
        "ident": SMTP_IDENT,
        "tls_context": security.starttls_context,
        "require_starttls": security.plan.require_starttls,
        "authenticator": security.authenticator,
        "auth_required": security.authenticator is not None,
        "auth_require_tls": security.plan.auth_require_tls,
        "loop": loop,
    }
    session_class: type[SinkSMTP] = SinkSMTP
    if settings.sink_reply_delay_ms:
        session_class = DelayedReplySMTP
        session_options["reply_delay_seconds"] = settings.sink_reply_delay_ms / 1000
    smtp_server = await loop.create_server(
        lambda: session_class(handler, **session_options),
        sock=smtp_socket,
        ssl=security.listening_context,
    )
    http_server = EmbeddedServer(
        uvicorn.Config(
            build_app(store, smtp_listening=smtp_server.is_serving, metrics=metrics, faults=faults),
            log_config=None,
            log_level=settings.log_level.lower(),
            access_log=settings.log_level == "DEBUG",
            lifespan="off",
        )
    )
    stopping = stop_on_signals()
    http_task = asyncio.create_task(http_server.serve(sockets=[http_socket]))
    http_url = f"http://{settings.sink_host}:{settings.sink_http_port}"
    print(
        f"SMTP sink: SMTP on {settings.sink_host}:{settings.sink_smtp_port}, "
        f"HTTP API on {http_url}/api/v1/messages, web inbox on {http_url}/, "
        f"messages in {settings.sink_db_path}{_reply_delay(settings.sink_reply_delay_ms)}",
        flush=True,
    )
    for offer in security.offers():
        log.info("%s", offer)
    if faults.greylist.on:
        log.info("%s", faults.greylist.describe())
    if faults.rate_limit is not None:
        log.info(
            "rate limit: above %d emails in any second, MAIL FROM is refused with 421 4.7.0 "
            "and the connection closed",
            faults.rate_limit.limit,
        )
    log.info("%s", simulator.describe())
    try:
        stop_task = asyncio.create_task(stopping.wait())
        await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
    finally:
        smtp_server.close()
        http_server.should_exit = True
        await http_task
        await smtp_server.wait_closed()
        await handler.finish_discards()
        await store.close()
    print("SMTP sink stopped.", flush=True)


def _security(settings: Settings) -> SmtpSecurity:
    """Read the TLS and AUTH files once, before listening: a bad one is one line and exit 1."""
    try:
        return load_security(settings)
    except SecurityError as error:
        sys.exit(f"smtp_sink: {error}")


def _reply_delay(milliseconds: int) -> str:
    return f", every reply {milliseconds} ms late (a relay far away)" if milliseconds else ""


def _rate_limit(emails_a_second: int | None) -> RateLimit | None:
    return None if emails_a_second is None else RateLimit(emails_a_second)


def _now() -> datetime:
    # Milliseconds, as stored: what the sink prints is what the API returns.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


if __name__ == "__main__":
    main()
