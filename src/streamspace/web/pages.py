"""The minimal web UI: one HTML page plus static ES modules and CSS (no build step).

The page talks to the JSON API with the ``streamspace_token`` httpOnly cookie, so these
files themselves need no authentication.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
INDEX_HTML = STATIC_DIR / "index.html"

# The page names its module/CSS URLs without version hashes, so neither the HTML nor the
# assets may be cached stale across upgrades; "no-cache" still allows cheap revalidation.
_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate"}


class _RevalidatingStaticFiles(StaticFiles):
    """StaticFiles that asks browsers to revalidate (ETag) before reusing an asset."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        return response


def mount_web(app: FastAPI) -> None:
    """Serve the single page at ``GET /`` and its assets under ``/static``."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(INDEX_HTML, media_type="text/html", headers=_NO_CACHE)

    app.mount("/static", _RevalidatingStaticFiles(directory=STATIC_DIR), name="static")
