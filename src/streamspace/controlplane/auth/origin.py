"""The same-origin rule for cookie-authenticated requests that change state (CSRF).

A browser attaches the login cookie to requests that other sites make it send; it also tells
where they came from: ``Origin`` on every POST/PUT/PATCH/DELETE (``Referer`` in old browsers,
used only when ``Origin`` is missing). Such a request is refused with 403 unless that origin
is this server's own (scheme from the connection, or a trusted proxy's ``X-Forwarded-Proto``;
host from ``Host``). Bearer-token clients are not affected: no other site can make a browser
send an ``Authorization`` header.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from streamspace.controlplane.deps import COOKIE_NAME

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower-case (``null`` and garbage stay themselves)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    return f"{parts.scheme}://{parts.netloc}".lower()


def cross_site_refusal(request: Request) -> str | None:
    """Why a cookie-authenticated request must be refused, or ``None`` when it may pass."""
    if request.method not in UNSAFE_METHODS or COOKIE_NAME not in request.cookies:
        return None
    if request.headers.get("authorization", "").lower().startswith("bearer "):
        return None
    own = f"{request.url.scheme}://{request.url.netloc}".lower()
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if claimed is None:
        return (
            "cross-site request refused: a request authenticated by the login cookie must "
            "carry an Origin header (or use an Authorization: Bearer token)"
        )
    origin = _origin_of(claimed)
    if origin != own:
        return (
            f"cross-site request refused: origin {origin} is not this server ({own}); "
            "behind a TLS proxy, list it in FORWARDED_ALLOW_IPS"
        )
    return None


class SameOriginMiddleware:
    """Applies :func:`cross_site_refusal` to every HTTP request (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            refusal = cross_site_refusal(Request(scope))
            if refusal is not None:
                await JSONResponse({"detail": refusal}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
