"""The web UI: one HTML page plus static ES modules and CSS (no build step).

The page talks to the JSON API with the ``streamspace_token`` httpOnly cookie, so these
files themselves need no authentication.

The session viewer uses noVNC's ES modules straight from npm (``npm ci`` in the repository
root, run by ``scripts/install-deps.sh``); they are served under ``/vendor/novnc/`` from
``$STREAMSPACE_NOVNC_DIR`` or else ``<repository>/node_modules/@novnc/novnc``. noVNC is not
copied into the repository. When it is missing, those URLs answer 503 with a page that says
how to install it, and the rest of the UI still works.
"""

from __future__ import annotations

import html
import os
from os import PathLike
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
INDEX_HTML = STATIC_DIR / "index.html"
REPO_ROOT = Path(__file__).resolve().parents[3]
NOVNC_ENV = "STREAMSPACE_NOVNC_DIR"
NOVNC_URL = "/vendor/novnc"
_NOVNC_ENTRY = Path("core") / "rfb.js"

# The page names its module/CSS URLs without version hashes, so neither the HTML nor the
# assets may be cached stale across upgrades; "no-cache" still allows cheap revalidation.
_NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate"}


def novnc_dir() -> Path:
    """Where noVNC's package (with ``core/rfb.js``) is expected: env var, else node_modules."""
    configured = os.environ.get(NOVNC_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return REPO_ROOT / "node_modules" / "@novnc" / "novnc"


def novnc_problem(directory: Path) -> str | None:
    """``None`` when ``directory`` holds noVNC, else what is wrong in words."""
    if not (directory / _NOVNC_ENTRY).is_file():
        return f"noVNC was not found: {directory / _NOVNC_ENTRY} does not exist."
    return None


def _novnc_missing_page(problem: str) -> HTMLResponse:
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Viewer not installed</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto;">
<h1>The session viewer (noVNC) is not installed</h1>
<p>{html.escape(problem)}</p>
<p>Install it with <code>scripts/install-deps.sh</code> (which runs <code>npm ci</code> in the
StreamSpace directory), or point <code>{NOVNC_ENV}</code> at a directory that holds noVNC's
<code>core/</code> and <code>vendor/</code> folders, then reload this page.</p>
</body></html>"""
    return HTMLResponse(body, status_code=503, headers=_NO_CACHE)


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


class _NoVncFiles(_RevalidatingStaticFiles):
    """noVNC's files; a clear 503 page instead of bare 404s while noVNC is not installed.

    The directory is checked per request, so installing noVNC needs no restart.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, check_dir=False)
        self._root = directory

    async def check_config(self) -> None:
        # Starlette raises on a missing directory; get_response explains it instead.
        if novnc_problem(self._root) is None:
            await super().check_config()

    async def get_response(self, path: str, scope: Scope) -> Response:
        problem = novnc_problem(self._root)
        if problem is not None:
            return _novnc_missing_page(problem)
        return await super().get_response(path, scope)


def mount_web(app: FastAPI) -> None:
    """Serve the single page at ``GET /``, its assets under ``/static``, noVNC under
    ``/vendor/novnc``."""

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(INDEX_HTML, media_type="text/html", headers=_NO_CACHE)

    app.mount("/static", _RevalidatingStaticFiles(directory=STATIC_DIR), name="static")
    app.mount(NOVNC_URL, _NoVncFiles(novnc_dir()), name="novnc")
