"""The pagination of every list route: ``limit`` and ``cursor`` in, a ``Link`` header out.

The body stays a JSON array; when more rows follow, the answer carries
``Link: </api/v1/...?...&cursor=...&limit=N>; rel="next"`` (RFC 8288), the request's own
path and query with the next cursor. A client follows it until there is none.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request, Response

from streamspace.db.repo.pages import DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT, Page, PageRequest


def page_request(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Rows per page (1 to {MAX_LIMIT}).")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_CURSOR,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="Where the page starts: from the `next` link of the page before.",
        ),
    ] = None,
) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor)


PageDep = Annotated[PageRequest, Depends(page_request)]
PAGED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One page of the list.",
        "headers": {
            "Link": {
                "description": 'The next page, when there is one: `<URL>; rel="next"`.',
                "schema": {"type": "string"},
            }
        },
    }
}
"""The OpenAPI ``responses`` of a paged list route."""


def link_next(request: Request, response: Response, page: Page[Any]) -> None:
    """Add the ``Link`` to the next page, if there is one, to ``response``."""
    if page.next is None:
        return
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in _PAGING]
    limit = request.query_params.get("limit") or str(DEFAULT_LIMIT)
    query = urlencode([*params, ("cursor", page.next), ("limit", limit)])
    response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'


_PAGING = frozenset({"cursor", "limit"})
