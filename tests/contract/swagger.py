"""Mailpit's published contract, its swagger.json, as validators of the answers of our sink.

mailpit/swagger.json is Mailpit v1.33.1's server/ui/api/v1/swagger.json (module
github.com/axllent/mailpit, MIT licence in mailpit/LICENSE), copied so that a fresh clone needs
neither Go nor the network to hold the sink to it.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from jsonschema import Draft4Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT4

MAILPIT_VERSION = "v1.33.1"
SWAGGER_PATH = Path(__file__).parent / "mailpit" / "swagger.json"
SOURCE_IN_MODULE = Path("server/ui/api/v1/swagger.json")
DOCUMENT_URI = "urn:mailpit:api:v1:swagger"


@cache
def swagger() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SWAGGER_PATH.read_text(encoding="utf-8"))
    return document


@cache
def _registry() -> Registry[Any]:
    document = DRAFT4.create_resource(_every_property_required(swagger()))
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, document)
    return registry


def _every_property_required(document: dict[str, Any]) -> dict[str, Any]:
    """The document with each object's declared properties all required.

    Mailpit's definitions require almost nothing, but Mailpit always answers every field, and
    clients read them unchecked: a field the sink left out is a break the plain schema misses.
    Fields of the sink's own (Duplicate, MessageIDCount) stay allowed, as the schema allows them.
    """
    strict = copy.deepcopy(document)

    def visit(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("properties"), dict):
                node["required"] = sorted(node["properties"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(strict["definitions"])
    visit(strict["responses"])
    visit(strict["paths"])
    return strict


def _format_checker() -> FormatChecker:
    """Swagger's formats that the answers use: RFC 3339 times, and unsigned counts."""
    checker = FormatChecker(formats=())
    checker.checks("date-time", raises=ValueError)(_is_rfc3339)
    checker.checks("uint64")(_is_unsigned)
    return checker


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    datetime.fromisoformat(value)  # ValueError for what is no time at all
    return "T" in value and (value.endswith("Z") or value[-6] in "+-")


def _is_unsigned(value: object) -> bool:
    return not isinstance(value, int) or value >= 0


def response_schema(method: str, route: str, status: int) -> tuple[str, dict[str, Any]]:
    """The JSON pointer and schema of the answer swagger.json declares, following a
    `#/responses/...` reference; AssertionError if the route does not declare that status."""
    operation = swagger()["paths"][route][method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {route} declares no {status}: {sorted(responses)}"
    pointer = f"/paths/{_escape(route)}/{method.lower()}/responses/{status}"
    response = responses[str(status)]
    if "$ref" in response:
        pointer = response["$ref"].removeprefix("#")
        response = swagger()["responses"][pointer.rsplit("/", 1)[1]]
    return f"{pointer}/schema", response["schema"]


def definition_validator(name: str) -> Draft4Validator:
    """A validator of one of swagger.json's definitions, e.g. a request body's schema."""
    return _validator(f"/definitions/{name}")


def check_response(method: str, route: str, response: httpx.Response) -> Any:
    """Hold one answer of the sink to Mailpit's contract; returns the decoded body.

    The status must be one the route declares; a JSON schema needs a JSON body that validates,
    with every declared property present; a string schema needs Mailpit's text/plain.
    """
    pointer, schema = response_schema(method, route, response.status_code)
    content_type = response.headers.get("content-type", "")
    if schema.get("type") == "string":
        assert content_type.startswith("text/plain"), (
            f"{method} {route} {response.status_code}: text/plain, not {content_type!r}"
        )
        return response.text
    assert content_type.startswith("application/json"), (
        f"{method} {route} {response.status_code}: application/json, not {content_type!r}"
    )
    body = response.json()
    errors = sorted(_validator(pointer).iter_errors(body), key=lambda error: list(error.path))
    assert not errors, f"{method} {route} breaks Mailpit's contract:\n" + "\n".join(
        f"  at {'/'.join(map(str, error.path)) or '(top)'}: {error.message}" for error in errors
    )
    return body


def _validator(pointer: str) -> Draft4Validator:
    return Draft4Validator(
        {"$ref": f"{DOCUMENT_URI}#{quote(pointer, safe='/~')}"},
        registry=_registry(),
        format_checker=_format_checker(),
    )


def _escape(route: str) -> str:
    """A route as one JSON pointer token (RFC 6901)."""
    return route.replace("~", "~0").replace("/", "~1")
