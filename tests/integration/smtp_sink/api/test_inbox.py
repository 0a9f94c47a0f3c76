"""The web inbox at / on the real sink: its page, script and style, under a strict CSP."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.integration.smtp_sink.conftest import RunningSink

TEST_IDS = (
    "message-list",
    "search-input",
    "clear-button",
    "message-count",
    "message-view",
    "message-headers",
    "message-text",
    "message-html",
)


def directives(policy: str) -> dict[str, list[str]]:
    parsed = (directive.split() for directive in policy.split(";") if directive.strip())
    return {name: sources for name, *sources in parsed}


async def test_the_inbox_page_is_served_at_the_root_under_a_strict_csp(
    shared_sink: RunningSink,
) -> None:
    async with httpx.AsyncClient(base_url=shared_sink.api) as api:
        response = await api.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = directives(response.headers["content-security-policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval, nothing remote
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert response.headers["x-content-type-options"] == "nosniff"
    page = response.text
    assert '<script src="/inbox/inbox.js" defer></script>' in page
    assert '<link rel="stylesheet" href="/inbox/inbox.css">' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script"
    assert not re.search(r"https?://", page), "a remote URL: the inbox must work offline"
    for test_id in TEST_IDS:
        assert f'data-testid="{test_id}"' in page


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/inbox/inbox.js", "text/javascript"), ("/inbox/inbox.css", "text/css")],
)
async def test_the_inbox_script_and_style_are_served(
    shared_sink: RunningSink, path: str, content_type: str
) -> None:
    async with httpx.AsyncClient(base_url=shared_sink.api) as api:
        response = await api.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert "content-security-policy" in response.headers
    assert not re.search(r"https?://", response.text), "a remote URL"


async def test_the_inbox_script_never_writes_markup(shared_sink: RunningSink) -> None:
    async with httpx.AsyncClient(base_url=shared_sink.api) as api:
        script = (await api.get("/inbox/inbox.js")).text

    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("//"))
    for sink_of_markup in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink_of_markup not in code
    # What the HTML view may and may not do is tested in a browser: tests/browser/test_inbox.py.


async def test_an_unknown_inbox_file_is_404(shared_sink: RunningSink) -> None:
    async with httpx.AsyncClient(base_url=shared_sink.api) as api:
        response = await api.get("/inbox/secrets.txt")

    assert response.status_code == 404
