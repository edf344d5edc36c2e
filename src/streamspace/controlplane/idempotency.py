"""``Idempotency-Key`` on creating requests: a retry with the same key (on any replica,
within :data:`~streamspace.db.repo.idempotency.KEEP`) answers with what the first request
made and makes nothing again.

Launches claim their keys in the launch batch (:mod:`.sessions.launches`); every other
creating request claims its key with :func:`claim_or_recall` in the transaction that
creates, so the key and the thing it made commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from streamspace.controlplane.errors import Conflict, Invalid
from streamspace.db.engine import DbSession
from streamspace.db.models import IdempotencyKey, utcnow
from streamspace.db.repo import idempotency as idempotency_repo


class Idempotency(NamedTuple):
    """A client's ``Idempotency-Key`` and the hash of the request it came with."""

    key: str
    request_hash: str

    @classmethod
    def of(cls, key: str | None, resource: str, request: Mapping[str, Any]) -> Idempotency | None:
        """The key with the hash of ``request`` (what makes a ``resource``); ``None``
        without a key. Leave secrets (passwords) out of ``request``."""
        if key is None:
            return None
        canonical = json.dumps(request, sort_keys=True, default=str, separators=(",", ":"))
        return cls(key, hashlib.sha256(f"{resource}\n{canonical}".encode()).hexdigest())


async def claim_or_recall(
    db: DbSession,
    user_id: str,
    idempotency: Idempotency,
    *,
    resource: str,
    resource_id: str,
) -> str | None:
    """Claim the key for the ``resource`` this request is about to make (``None``: go on
    and make it) or, if a live key holds it, the id of what the first request made.

    :class:`Invalid` if the key was used for another request; :class:`Conflict` if the
    first request was still in progress and then made nothing (send it again).
    """
    row = IdempotencyKey(
        user_id=user_id,
        key=idempotency.key,
        request_hash=idempotency.request_hash,
        resource=resource,
        resource_id=resource_id,
    )
    if await idempotency_repo.claim(db, [row], now=utcnow()):
        return None
    return await recall(db, user_id, idempotency, resource=resource)


async def recall(db: DbSession, user_id: str, idempotency: Idempotency, *, resource: str) -> str:
    """The id of the ``resource`` an earlier request with this key made.

    :class:`Invalid` if the key was used for another request; :class:`Conflict` if that
    request made nothing (it was in progress and failed: send it again).
    """
    earlier = await idempotency_repo.get(db, user_id, idempotency.key, now=utcnow())
    if earlier is None:
        raise Conflict(
            "another request with this Idempotency-Key was in progress and made nothing; "
            "send it again"
        )
    if earlier.request_hash != idempotency.request_hash or earlier.resource != resource:
        raise Invalid(
            "this Idempotency-Key was used for a different request; use a new key for a new request"
        )
    return earlier.resource_id
