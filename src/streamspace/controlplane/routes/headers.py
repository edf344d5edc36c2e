"""Request headers more than one route reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Any printable ASCII text without spaces: a retry with the same key "
        "(on any replica, within 24 h) answers with what the first request made.",
    ),
]
