"""The API's `GET /emails/{id}` as the console asks it: the id checked first and put in the
path as one segment, the answer passed on as it is, and an API that does not answer (or not in
JSON) said in one line. Against a real HTTP server: tests/integration/console/test_journey.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from services.console.sources import ApiSource, SourceError, message_id_problem

API_URL = "http://api.test:8000/"


async def ask(answer: Callable[[httpx.Request], httpx.Response]) -> tuple[int, dict[str, Any]]:
    """The console's question about m-1, of an API that answers with `answer`."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        return await ApiSource(http, API_URL).email("m-1")


async def test_the_apis_answer_is_passed_on_as_it_is() -> None:
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(404, json={"detail": "no email with id m-1"})

    status_code, body = await ask(answer)

    assert (status_code, body) == (404, {"detail": "no email with id m-1"})
    assert asked == ["http://api.test:8000/emails/m-1"]


async def test_an_api_that_answers_no_json_object_is_a_source_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with pytest.raises(SourceError, match=r"emails/m-1 \(status 502\) did not answer JSON"):
        await ask(answer)


async def test_an_api_that_does_not_answer_is_a_source_error_naming_it() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(SourceError, match=re.escape("http://api.test:8000/emails/m-1: Connect")):
        await ask(refuse)


@pytest.mark.parametrize("message_id", ["0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0", "m.1_x-2", "a"])
def test_the_apis_ids_are_message_ids(message_id: str) -> None:
    assert message_id_problem(message_id) is None


@pytest.mark.parametrize(
    ("message_id", "problem"),
    [
        ("", "'' is not a message id: an id is 1 to 200 letters, digits"),
        ("a/b", "'a/b' is not a message id"),
        ("a b", "'a b' is not a message id"),
        ("x" * 201, "is not a message id"),
        ("..", "'..' is not a message id: an id is more than dots"),
    ],
)
def test_anything_else_is_refused_with_what_an_id_is(message_id: str, problem: str) -> None:
    said = message_id_problem(message_id)

    assert said is not None
    assert problem in said
