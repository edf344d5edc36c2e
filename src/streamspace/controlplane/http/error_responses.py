"""The API's one error body, and the handlers that give every failure that shape.

Every error answer, whatever raised it (a service, a route, request validation, Starlette's
404/405, the body limit, the database being down, a bug), is an :class:`ErrorOut`:
``{"detail": "a sentence"}``, plus ``"errors": [{"loc", "msg", "type"}, ...]`` when the
request failed validation (422). Clients show ``detail``; ``errors`` points at the fields.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match

from streamspace.controlplane.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from streamspace.db.errors import UNAVAILABLE_ERRORS
from streamspace.db.repo.pages import BadCursor

log = logging.getLogger(__name__)

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_SHOWN_FIELD_ERRORS = 3
"""Field errors named in ``detail``; ``errors`` lists them all."""
STATUS_OF: dict[type[ServiceError], int] = {
    Invalid: 422,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    TooManyRequests: 429,
    Unavailable: 503,
}
"""The HTTP status of each service error (any other: 400)."""


class FieldError(BaseModel):
    """One reason a request was invalid."""

    loc: list[str | int]
    """Where: ``["body", "password"]``, ``["query", "limit"]``, ``["body", 12]`` (a byte offset
    of unparseable JSON)."""
    msg: str
    type: str
    """Pydantic's error type, e.g. ``missing``, ``string_too_long``, ``json_invalid``."""


class ErrorOut(BaseModel):
    """Every error answer of the API."""

    detail: str
    """What went wrong, in words a person can read."""
    errors: list[FieldError] | None = None
    """Only on 422: each invalid field."""


def printable(text: str) -> str:
    """``text`` with lone surrogates spelled as escapes (``\\ud800``): they are not Unicode,
    so a JSON answer containing one could not even be encoded."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(
    status_code: int,
    detail: str,
    *,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The JSON answer in the one error shape (``errors`` left out when there are none)."""
    body = ErrorOut(detail=printable(detail), errors=list(errors) or None)
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )


def field_errors(raw: Sequence[Any]) -> list[FieldError]:
    """Pydantic's error dicts without their ``input``/``ctx`` (never echo what was sent)."""
    found = []
    for error in raw:
        msg = str(error["msg"])
        if error["type"] == "json_invalid":
            msg = f"invalid JSON: {error['ctx']['error']}"
        elif isinstance(error.get("input"), bytes):
            # FastAPI hands the raw bytes on when the content type is not JSON.
            msg = "not JSON: send a JSON object with Content-Type: application/json"
        loc = [part if isinstance(part, int) else printable(str(part)) for part in error["loc"]]
        found.append(FieldError(loc=loc, msg=printable(msg), type=str(error["type"])))
    return found


def describe(errors: Sequence[FieldError]) -> str:
    """One sentence naming the first few invalid fields."""
    named = [
        f"{'.'.join(str(part) for part in error.loc) or 'request'}: {error.msg}"
        for error in errors[:_SHOWN_FIELD_ERRORS]
    ]
    more = len(errors) - len(named)
    tail = f" (and {more} more)" if more > 0 else ""
    return f"invalid request: {'; '.join(named)}{tail}"


def status_of(error: ServiceError) -> int:
    """The HTTP status ``error`` answers with (that of its nearest mapped class)."""
    for kind in type(error).__mro__:
        if kind in STATUS_OF:
            return STATUS_OF[kind]
    return 400


async def _service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(status_of(exc), exc.message, headers=exc.headers)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(exc.status_code, str(exc.detail), headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """The methods some route of the app serves at the request's path.

    Starlette's 405 names only those of the first route matching the path, but FastAPI
    has one route per method, so its ``Allow`` would leave out the others."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    return error_response(422, describe(errors), errors=errors)


async def _bad_cursor(_request: Request, exc: Exception) -> JSONResponse:
    errors = [FieldError(loc=["query", "cursor"], msg=str(exc), type="value_error")]
    return error_response(422, describe(errors), errors=errors)


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return error_response(
        503, "database unavailable; try again shortly", headers={"Retry-After": "2"}
    )


async def _internal_error(_request: Request, _exc: Exception) -> JSONResponse:
    # Starlette logs the traceback itself after this answer; the client learns nothing more.
    return error_response(500, "internal server error; the details are in the server's log")


def install_error_handlers(app: FastAPI) -> None:
    """Give every failure of ``app`` the one error shape."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(BadCursor, _bad_cursor)
    for error in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(Exception, _internal_error)
