"""A cap on request bodies: larger ones get 413 before the application has them whole.

Starlette's own limit answers in plain text and only once the application reads the body;
this one refuses a too large ``Content-Length`` before the application runs at all, and
counts the bytes of bodies without one (chunked) as they arrive.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamspace.controlplane.http.error_responses import error_response


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit (FastAPI re-raises HTTP errors
    met while reading a body, so the app's HTTP error handler answers it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit))


def too_large(limit: int) -> str:
    return f"request body too large: at most {limit} bytes are accepted (MAX_REQUEST_BYTES)"


class BodyLimit:
    """ASGI middleware limiting HTTP request bodies to ``limit`` bytes (WebSockets pass)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No "Connection: close": the server discards the rest of the body (the app never
        # sees it), and a client that sends its whole body before reading gets this answer
        # instead of a connection reset.
        response = error_response(413, too_large(self.limit))
        await response(scope, receive, send)
