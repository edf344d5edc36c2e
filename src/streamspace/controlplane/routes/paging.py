"""The query parameters and the ``Link`` header of paginated lists (keyset pages, see
:mod:`streamspace.db.repo.pages`): ``?limit=`` (1..500, default 100) and an opaque
``?cursor=``; the body stays a JSON array, and ``Link: <…?cursor=…&limit=…>; rel="next"``
says where the next page is while there is one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request, Response

from streamspace.db.repo.pages import MAX_CURSOR, Page

MAX_LIMIT = 500
DEFAULT_LIMIT = 100

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_CURSOR,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Where the page starts: the `cursor` of the previous page's `Link`.",
    ),
]

LINKED: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "Link": {
                "description": 'While more items follow: `<URL of the next page>; rel="next"`.',
                "schema": {"type": "string"},
            }
        }
    }
}
"""The ``responses`` entry that documents the header."""


def link_next(request: Request, response: Response, page: Page[Any], *, limit: int) -> None:
    """Set ``Link`` to the next page (same path and filters) when there is one."""
    if page.next_cursor is None:
        return
    url = request.url.include_query_params(cursor=page.next_cursor, limit=limit)
    response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'
