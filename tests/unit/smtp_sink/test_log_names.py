"""The names on the sink's log lines, which their readers and tests look for: each module logs
under the name its lines carry, whatever package the module is in."""

from __future__ import annotations

from types import ModuleType

import pytest

import services.smtp_sink.__main__ as composition_root
from services.smtp_sink.api import app
from services.smtp_sink.fast_paths import aiosmtpd_internals
from services.smtp_sink.simulator import greylist
from services.smtp_sink.smtp import auth, handler, session, store


@pytest.mark.parametrize(
    ("module", "name"),
    [
        (composition_root, "services.smtp_sink"),
        (session, "services.smtp_sink.smtp"),
        (handler, "services.smtp_sink.smtp"),
        (aiosmtpd_internals, "services.smtp_sink.smtp"),
        (auth, "services.smtp_sink.auth"),
        (store, "services.smtp_sink.store"),
        (greylist, "services.smtp_sink.greylist"),
        (app, "services.smtp_sink.api"),
    ],
    ids=lambda value: value.__name__ if isinstance(value, ModuleType) else value,
)
def test_each_module_logs_under_the_name_its_lines_carry(module: ModuleType, name: str) -> None:
    assert module.log.name == name
