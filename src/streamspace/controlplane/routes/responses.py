"""The API's error answers as its OpenAPI description documents them, declared once.

Routers name the answers every one of their routes can give (``AUTHENTICATED``); routes add
their own (``errors(404, 409)``). Every one has the one error body, :class:`ErrorOut`.
"""

from __future__ import annotations

from typing import Any

from streamspace.controlplane.http.error_responses import ErrorOut

Responses = dict[int | str, dict[str, Any]]

_WHY = {
    400: "The body is not JSON text (not UTF-8, or nested too deeply to read).",
    401: "Not authenticated: no token, or it expired or was revoked.",
    403: "Administrators only, a cookie-authenticated change sent from another origin, or a "
    "template the user's groups may not launch.",
    404: "No such resource (or it is not yours).",
    409: "The request conflicts with the current state of the resource.",
    413: "The body is larger than MAX_REQUEST_BYTES.",
    422: "The request is invalid; `errors` names each invalid field.",
    429: "Too many failed attempts (retry after `Retry-After` seconds), or a quota reached "
    "(`detail` says which).",
    503: "Unavailable for now (the database, or no agent for a launch); retry shortly.",
}


def errors(*codes: int) -> Responses:
    """OpenAPI ``responses`` for these error status codes."""
    return {code: {"model": ErrorOut, "description": _WHY[code]} for code in codes}


AUTHENTICATED = errors(401, 403, 422, 503)
"""Every route that needs a logged-in user (or an agent's key)."""
ADMIN = errors(403)
"""Added by routes for administrators only."""
BODY = errors(400, 413, 422)
"""Added by every route that takes a JSON body."""
