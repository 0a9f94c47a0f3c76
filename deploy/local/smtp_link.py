"""How `make up`'s worker and sink speak SMTP: as the worker's settings say it speaks to a relay.

With SMTP_TLS=starttls (or tls) the sink gets a certificate from a local CA and requires TLS, and
the worker trusts that CA; with SMTP_USERNAME and SMTP_PASSWORD the sink requires that user.
Settings the user gave (SINK_TLS_*, SINK_AUTH_FILE, SMTP_CA_FILE...) win over these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from deploy.local.errors import StackError
from deploy.local.tls import LocalTlsFiles, certificate_names, ensure_sink_certificate
from shared.settings import PROJECT_ROOT, Settings

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
ANY_ADDRESS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True)
class SmtpLink:
    tls: Literal["none", "starttls", "tls"]  # what the sink speaks, as the worker asks for it
    sink_env: Mapping[str, str] = field(default_factory=dict)
    worker_env: Mapping[str, str] = field(default_factory=dict)
    local_tls: LocalTlsFiles | None = None  # to create, or reuse, before either starts
    host_names: tuple[str, ...] = ()  # what the sink's certificate must name
    auth_file: Path | None = None  # to write with the worker's user and password, if any
    username: str | None = None
    password: SecretStr | None = None  # a SecretStr: never in a repr or a log


def delivers_to_sink(settings: Settings) -> bool:
    """Whether the worker's SMTP_HOST and SMTP_PORT are the stack's own sink (else: a relay,
    to which the SMTP_* settings belong, and the sink is left as its own settings say)."""
    if settings.smtp_port != settings.sink_smtp_port:
        return False
    smtp_host, sink_host = settings.smtp_host.lower(), settings.sink_host.lower()
    return smtp_host == sink_host or (
        smtp_host in LOOPBACK and (sink_host in LOOPBACK or sink_host in ANY_ADDRESS)
    )


def plan_smtp_link(settings: Settings) -> SmtpLink:
    """Which environment the sink and the worker get; pure, and never refuses (prepare does)."""
    if not delivers_to_sink(settings):
        return SmtpLink(tls="none")
    user_set = settings.model_fields_set
    sink_env: dict[str, str] = {}
    worker_env: dict[str, str] = {}
    local_tls = None
    own_certificate = settings.sink_tls_cert_file is None and settings.sink_tls_key_file is None
    if settings.smtp_tls != "none" and own_certificate:
        local_tls = LocalTlsFiles(settings.run_dir / "tls")
        sink_env["SINK_TLS_CERT_FILE"] = str(local_tls.cert_file)
        sink_env["SINK_TLS_KEY_FILE"] = str(local_tls.key_file)
        if settings.smtp_ca_file is None:
            worker_env["SMTP_CA_FILE"] = str(local_tls.ca_file)
    if settings.smtp_tls == "starttls" and "sink_require_starttls" not in user_set:
        sink_env["SINK_REQUIRE_STARTTLS"] = "true"
    if settings.smtp_tls == "tls" and "sink_tls_implicit" not in user_set:
        sink_env["SINK_TLS_IMPLICIT"] = "true"
    username, password = settings.smtp_username, settings.smtp_password
    auth_file = None
    if username is None or password is None or settings.sink_auth_file is not None:
        username, password = None, None
    else:
        auth_file = settings.run_dir / "sink" / "auth"
        sink_env["SINK_AUTH_FILE"] = str(auth_file)
    return SmtpLink(
        tls=settings.smtp_tls,
        sink_env=sink_env,
        worker_env=worker_env,
        local_tls=local_tls,
        host_names=certificate_names(
            ["localhost", "127.0.0.1", settings.sink_host, settings.smtp_host]
        ),
        auth_file=auth_file,
        username=username,
        password=password,
    )


def describe(link: SmtpLink) -> list[str]:
    """What `make up` says about it: empty while the sink speaks plain SMTP as before."""
    lines = []
    if link.tls == "starttls":
        lines.append("The sink speaks STARTTLS, and the worker starts TLS before anything else.")
    elif link.tls == "tls":
        lines.append("The sink speaks TLS from the first byte (SMTP_TLS=tls, implicit TLS).")
    if link.local_tls is not None:
        lines.append(
            f"Its certificate ({shown(link.local_tls.cert_file)}, for "
            f"{', '.join(link.host_names)}) is from the local CA {shown(link.local_tls.ca_file)}"
            + (", which the worker trusts." if "SMTP_CA_FILE" in link.worker_env else ".")
        )
    if link.auth_file is not None:
        lines.append(f"The sink requires AUTH as {link.username} ({shown(link.auth_file)}).")
    return lines


def prepare(link: SmtpLink, now: datetime | None = None) -> list[str]:
    """Create, or check and reuse, the files the link needs; says what it created."""
    notes = []
    if link.local_tls is not None:
        issued = ensure_sink_certificate(link.local_tls.directory, link.host_names, now)
        files = issued.files
        if issued.created_ca:
            notes.append(f"Created a local CA for the sink's certificates: {shown(files.ca_file)}.")
        if issued.issued:
            notes.append(
                f"Issued the sink's certificate for {', '.join(issued.host_names)}: "
                f"{shown(files.cert_file)}, valid until {issued.not_after:%Y-%m-%d}."
            )
    if link.auth_file is not None and link.username is not None and link.password is not None:
        write_auth_file(link.auth_file, link.username, link.password.get_secret_value())
    return notes


def write_auth_file(path: Path, username: str, password: str) -> None:
    """The sink's auth file for one user, readable by its owner only, rewritten whole."""
    if not username or ":" in username or username.strip() != username or "\n" in username:
        raise StackError(
            f"SMTP_USERNAME={username!r} cannot be a line of the sink's auth file "
            "(username:password): use a name without a colon, a line break or spaces around "
            "it, or give the sink your own file with SINK_AUTH_FILE."
        )
    if not password or "\n" in password or "\r" in password:
        raise StackError(
            "SMTP_PASSWORD cannot be a line of the sink's auth file: it is empty or holds a "
            "line break. Choose another, or give the sink your own file with SINK_AUTH_FILE."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(f"{username}:{password}\n")
    os.replace(partial, path)


def shown(path: Path | None) -> str:
    return str(path).removeprefix(f"{PROJECT_ROOT}/")
