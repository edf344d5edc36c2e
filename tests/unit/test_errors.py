"""The one error shape for failures no real server can be made to show on purpose: a bug."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from streamspace.controlplane.http.error_responses import install_error_handlers


async def test_a_bug_answers_500_in_the_error_shape_without_its_details() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("secret internals")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/bug")
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal server error; the details are in the server's log"
    }
